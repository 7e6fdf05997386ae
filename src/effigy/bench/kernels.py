"""Which integer matmul path is fastest on this CPU: fp32 vs ``torch._int_mm`` vs fbgemm int8.

Shapes are the shipped digits DiT's linear layers at a sampling batch (CFG doubles the batch), so
the answer is about the model effigy actually quantizes. Each path is checked against exact integer
arithmetic before it is timed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from effigy.bench.contract import Bench, json_and_markdown
from effigy.bench.variants import RESULT_SCHEMA
from effigy.core import kernels
from effigy.core.quant import QuantSpec, compute_qparams, quantize
from effigy.errors import BenchError
from effigy.evaluate.measure import machine_facts, median_seconds
from effigy.evaluate.report import SettingsRecord, machine_line, markdown_table

DIT_DIGITS_SHAPES = {"attn q/k/v/out": (128, 128), "ff in": (128, 512), "ff out": (512, 128)}


def run_kernel_bench(tokens: int = 2 * 20 * 64, repeats: int = 20, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    act_bits = kernels.fbgemm_max_activation_bits()
    rows = []
    for name, (k, n) in DIT_DIGITS_SHAPES.items():
        x, w = torch.randn(tokens, k), torch.randn(n, k)
        w_spec = QuantSpec(bits=8, granularity="channel")
        w_scale, _ = compute_qparams(w, w_spec)
        wq = quantize(w, w_spec, w_scale, torch.zeros_like(w_scale))
        a_spec = QuantSpec(bits=act_bits, granularity="token", dynamic=True)
        x_scale, _ = compute_qparams(x, a_spec)
        xq = quantize(x, a_spec, x_scale, torch.zeros_like(x_scale))
        packed = kernels.fbgemm_prepack(wq, w_scale.flatten())
        exact = (xq.double() @ wq.double().t()) * w_scale.double().t()
        fbgemm = lambda: kernels.fbgemm_linear(xq.float(), packed, act_bits)
        int_mm = lambda: kernels.int_matmul(xq, wq).float() * w_scale.t()
        for label, fn in (("fbgemm", fbgemm), ("int_mm", int_mm)):
            if not torch.allclose(fn().double(), exact, rtol=1e-5, atol=1e-3):
                raise BenchError(f"{label} disagrees with exact integer arithmetic on {name}")
        fp32 = median_seconds(lambda: torch.nn.functional.linear(x, w), repeats)
        rows.append({
            "layer": name, "m": tokens, "k": k, "n": n, "activation_bits": act_bits,
            "fp32_ms": 1000 * fp32,
            "int_mm_ms": 1000 * median_seconds(int_mm, max(3, repeats // 5)),
            "fbgemm_ms": 1000 * median_seconds(fbgemm, repeats),
        })
        rows[-1]["fbgemm_speedup_vs_fp32"] = rows[-1]["fp32_ms"] / rows[-1]["fbgemm_ms"]
        rows[-1]["int_mm_speedup_vs_fp32"] = rows[-1]["fp32_ms"] / rows[-1]["int_mm_ms"]
    return {"benchmark": "kernels", "schema": RESULT_SCHEMA, "seed": seed, "machine": machine_facts(), "rows": rows}


KERNEL_COLUMNS = [
    ("layer", "layer"), ("m", "M"), ("k", "K"), ("n", "N"), ("activation_bits", "act bits"),
    ("fp32_ms", "fp32 ms"), ("int_mm_ms", "torch._int_mm ms"), ("fbgemm_ms", "fbgemm int8 ms"),
    ("int_mm_speedup_vs_fp32", "_int_mm speedup"), ("fbgemm_speedup_vs_fp32", "fbgemm speedup"),
]


def render(result: dict) -> str:
    """The results file's Markdown: the command, the machine and one row per layer shape."""
    return (f"# Integer matmul paths on this CPU\n\nCommand: `{result['command']}` (seed {result['seed']})  \n"
            f"{machine_line(result['machine'])}\n\n" + markdown_table(result["rows"], KERNEL_COLUMNS))


@dataclass
class KernelBenchSettings(SettingsRecord):
    """The digits DiT's layer shapes at ``tokens`` rows, each path timed ``repeats`` times."""

    tokens: int = 2 * 20 * 64
    repeats: int = 20
    seed: int = 0


BENCH = Bench("kernels", KernelBenchSettings,
              lambda s, _progress: run_kernel_bench(s.tokens, s.repeats, s.seed), json_and_markdown(render),
              lambda result, s: (result, KERNEL_COLUMNS, "integer matmul paths"),
              model=lambda s: "layer-shapes", file_name="kernels")
