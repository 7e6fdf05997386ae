"""Single linear layers of DiT-XL/2's shapes at 64 to 4,096 tokens: each matmul path against fp32.

The model section says what a user gets end to end; this one says where each kernel wins or loses
as the token count grows (per-token activation quantization is an extra pass over the input that a
long sequence pays in full). Random seeded weights and inputs; timed interleaved.
"""
from __future__ import annotations

import torch
from torch import nn

from effigy.core.kernels import cpu_has_vnni
from effigy.evaluate.measure import Progress, interleaved_medians, no_progress
from effigy.memory import held_bytes
from effigy.nn import QuantLinear
from effigy.recipes import fast_cpu_variant, get_recipe

DIT_XL_LINEARS = {"attention projection": (1152, 1152), "MLP up": (1152, 4608), "MLP down": (4608, 1152)}


def layer_paths(linear: nn.Linear) -> dict[str, nn.Module]:
    """fp32, bf16, PyTorch's quantize_dynamic and effigy's paths for one linear layer."""
    w8a8, w4a16 = get_recipe("vidit-q-w8a8"), get_recipe("rtn-w4a16")
    fast = fast_cpu_variant(w8a8)
    bf16 = nn.Linear(linear.in_features, linear.out_features).to(torch.bfloat16)
    bf16.load_state_dict({k: v.to(torch.bfloat16) for k, v in linear.state_dict().items()})

    def effigy(config, backend):
        return QuantLinear.from_linear(linear, config.weight, config.activation, backend=backend)

    paths = {
        "fp32": linear,
        "bf16": _Bf16(bf16),
        "quantize_dynamic int8": torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear},
                                                                        dtype=torch.qint8)[0],
        f"effigy {fast.name}": QuantLinear.from_linear(linear, fast.weight, fast.activation, backend="fbgemm"),
        "effigy vidit-q-w8a8 int": effigy(w8a8, "int"),
        "effigy vidit-q-w8a8 auto": effigy(w8a8, "auto"),
        "effigy rtn-w4a16 int4": effigy(w4a16, "int4"),
    }
    if not cpu_has_vnni():  # torch._int_mm's CPU fallback: minutes per call at 4,096 tokens
        del paths["effigy vidit-q-w8a8 int"]
    return {**paths, **compiled_paths(linear, paths["bf16"])}


def compiled_paths(linear: nn.Linear, bf16: nn.Module) -> dict[str, nn.Module]:
    """fp32, bf16 and effigy's W8A8 through :func:`effigy.compile` (static shapes: one graph per token count)."""
    from effigy.nn.compile import compile as effigy_compile

    w8a8 = get_recipe("vidit-q-w8a8")
    quantized = QuantLinear.from_linear(linear, w8a8.weight, w8a8.activation)
    return {"fp32 compiled": effigy_compile(linear, dynamic=False), "bf16 compiled": effigy_compile(bf16, dynamic=False),
            "effigy vidit-q-w8a8 compiled": effigy_compile(quantized, dynamic=False)}


class _Bf16(nn.Module):
    def __init__(self, linear: nn.Module) -> None:
        super().__init__()
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.to(torch.bfloat16)).float()


@torch.no_grad()
def _median_seconds_interleaved(paths: dict[str, nn.Module], x: torch.Tensor, repeats: int) -> dict[str, float]:
    return interleaved_medians({name: (lambda p=path: p(x)) for name, path in paths.items()}, repeats)[0]


@torch.no_grad()
def run_layer_section(tokens: tuple[int, ...], repeats: int, seed: int, progress: Progress = no_progress) -> list[dict]:
    """Every path of :func:`layer_paths` on DiT-XL/2's three linear shapes at each of ``tokens``; compiled paths
    compile once per shape (effigy.compile's models raise dynamo's recompile limit during their calls: the
    paths of one kind share a forward)."""
    from effigy.nn.compile import CompiledModel

    advance = progress("single layers", len(DIT_XL_LINEARS) * len(tokens))
    rows = []
    for layer_name, (fan_in, fan_out) in DIT_XL_LINEARS.items():
        torch.manual_seed(seed)
        linear = nn.Linear(fan_in, fan_out)
        paths = layer_paths(linear)
        fp_bytes = held_bytes(linear)
        for count in tokens:
            x = torch.randn(count, fan_in, generator=torch.Generator().manual_seed(seed + count))
            seconds = _median_seconds_interleaved(paths, x, repeats)
            reference = linear(x)
            for name, path in paths.items():
                out = path(x)
                rows.append({"layer": layer_name, "shape": f"{fan_in}->{fan_out}", "tokens": count, "path": name,
                             "backend": getattr(CompiledModel.uncompiled(path), "backend", "-"),
                             "speedup_vs_fp32": seconds["fp32"] / seconds[name], "latency_ms": 1e3 * seconds[name],
                             "held_bytes_ratio": held_bytes(CompiledModel.uncompiled(path)) / fp_bytes,
                             "relative_output_error": ((out - reference).norm() / reference.norm()).item()})
            advance()
    return rows
