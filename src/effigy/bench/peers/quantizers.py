"""effigy's W8A8 against a peer library's on the same model and inputs: torchao's
``Int8DynamicActivationInt8WeightConfig`` (per-channel int8 weights, per-token dynamic int8
activations: the same scheme as vidit-q-w8a8), where torchao is installed.

One denoiser call on a fixed noisy batch: output error relative to FP, and latency relative to FP,
timed interleaved. Whole sampling runs are not used because torchao's CPU path is several times
slower than fp32 here, which would make the full benchmark take hours.
"""
from __future__ import annotations

import copy
import importlib.util
from types import SimpleNamespace

import torch
from torch import nn

from effigy.nn import find_targets

TORCHAO_PIN = "torchao==0.18.0"


def torchao_w8a8(model: nn.Module, include, ignore, in_place: bool = False) -> nn.Module | None:
    """A torchao-quantized copy of ``model`` (the same layers effigy quantizes), or None if absent."""
    if importlib.util.find_spec("torchao") is None:
        return None
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    copied = model if in_place else copy.deepcopy(model)
    targets = set(find_targets(copied, include, ignore))
    quantize_(copied, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda _m, name: name in targets)
    return copied


def torchao_weight_only(model: nn.Module, include=("*",), ignore=None) -> tuple[nn.Module | None, str]:
    """A copy of ``model`` with torchao's ``Int8WeightOnlyConfig`` on the layers effigy quantizes (None when
    torchao is absent), and the library's name and version."""
    import importlib.metadata

    from effigy.nn.config import DEFAULT_IGNORE

    if importlib.util.find_spec("torchao") is None:
        return None, ""
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    copied = copy.deepcopy(model)
    targets = set(find_targets(copied, include, DEFAULT_IGNORE if ignore is None else ignore))
    quantize_(copied, Int8WeightOnlyConfig(), filter_fn=lambda _m, name: name in targets)
    return copied, f"torchao {importlib.metadata.version('torchao')} Int8WeightOnlyConfig"


def quantize_dynamic_int8(model: nn.Module, names) -> nn.Module:
    """PyTorch's own ``quantize_dynamic`` (fbgemm int8 weights, per-tensor dynamic activations, fused) on the
    named linear layers, in place: what a CPU user tries first."""
    return torch.ao.quantization.quantize_dynamic(model, set(names), dtype=torch.qint8, inplace=True)


class Bf16Call(nn.Module):
    """A bf16 copy of a model called with fp32 inputs, returning fp32 (what a user of bf16 does)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.to(torch.bfloat16)

    def forward(self, **inputs):
        cast = {k: v.to(torch.bfloat16) if torch.is_tensor(v) and v.is_floating_point() else v
                for k, v in inputs.items()}  # tensors only: PixArt also takes a dict of micro-conditions
        return SimpleNamespace(sample=self.model(**cast).sample.float())


@torch.no_grad()
def compare_one_call(fp_model: nn.Module, variants: dict[str, nn.Module], inputs: dict, repeats: int = 3) -> list[dict]:
    """Relative L2 output error vs FP and median latency ratio vs FP of one forward call."""
    from effigy.evaluate.measure import interleaved_medians

    models = {"fp32": fp_model, **variants}
    seconds, outputs = interleaved_medians({name: (lambda m=m: m(**inputs).sample) for name, m in models.items()},
                                           repeats)
    reference = outputs["fp32"]
    return [{"variant": name, "relative_output_error": ((outputs[name] - reference).norm() / reference.norm()).item(),
             "latency_ratio_vs_fp": seconds[name] / seconds["fp32"]} for name in variants]
