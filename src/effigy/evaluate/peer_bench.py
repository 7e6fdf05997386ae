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
import statistics
import time

import torch
from torch import nn

from effigy.nn import find_targets

TORCHAO_PIN = "torchao==0.18.0"


def torchao_w8a8(model: nn.Module, include, ignore) -> nn.Module | None:
    """A torchao-quantized copy of ``model`` (the same layers effigy quantizes), or None if absent."""
    if importlib.util.find_spec("torchao") is None:
        return None
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    copied = copy.deepcopy(model)
    targets = set(find_targets(copied, include, ignore))
    quantize_(copied, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda _m, name: name in targets)
    return copied


@torch.no_grad()
def compare_one_call(fp_model: nn.Module, variants: dict[str, nn.Module], inputs: dict, repeats: int = 3) -> list[dict]:
    """Relative L2 output error vs FP and median latency ratio vs FP of one forward call."""
    reference = fp_model(**inputs).sample
    models = {"fp32": fp_model, **variants}
    times: dict[str, list[float]] = {name: [] for name in models}
    for model in models.values():
        model(**inputs)  # warm-up
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model(**inputs)
            times[name].append(time.perf_counter() - start)
    fp_time = statistics.median(times["fp32"])
    rows = []
    for name, model in variants.items():
        out = model(**inputs).sample
        rows.append({"variant": name, "relative_output_error": ((out - reference).norm() / reference.norm()).item(),
                     "latency_ratio_vs_fp": statistics.median(times[name]) / fp_time})
    return rows
