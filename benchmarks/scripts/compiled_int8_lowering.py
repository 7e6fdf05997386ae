"""Which inductor setting makes effigy's compiled int8 layer fast on this CPU? One DiT-XL/2 MLP layer
(1152 -> 4608, 512 tokens: a CFG pair at 256 tokens), vidit-q-w8a8 on the graph-int8 backend, timed as:

- eager (``torch._int_mm`` called directly),
- compiled without freezing (the quantization fused around ``_int_mm``),
- compiled with freezing (inductor rewrites the graph to oneDNN's ``qlinear_pointwise``),
- compiled with freezing and max-autotune (GEMM backends CPP, ATEN),

beside fp32 eager and bf16 compiled. The freezing rows are timed over fewer calls where one call takes seconds.
effigy.compile's per-CPU choice (docs/kernels.md) comes from this file.

    python benchmarks/scripts/compiled_int8_lowering.py   # ~2 min (more where a frozen call is slow)
"""
import copy
import time
from pathlib import Path

import torch
from torch import nn
from torch._inductor.utils import run_and_get_code

import effigy
from effigy.core.kernels import cpu_isa_class
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.recipes import get_recipe

OUT = Path("benchmarks/results/checks")
TOKENS, IN, OUT_FEATURES = 512, 1152, 4608
SLOW = 1.0  # seconds: a path slower than this per call is timed over 2 calls, not 20


def median_seconds(call, calls: int) -> float:
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure(name: str, model: nn.Module, x: torch.Tensor, reference: torch.Tensor, config: dict | None) -> dict:
    """First call (compile) and median call of ``model`` under inductor ``config`` (None: eager)."""
    from torch._inductor import config as inductor

    torch._dynamo.reset()
    run = model if config is None else torch.compile(model)
    with torch.no_grad(), inductor.patch(config or {}):
        start = time.perf_counter()
        try:
            out, code = run_and_get_code(run, x) if config is not None else (run(x), [])
        except Exception as error:  # a lowering that fails is a result here: recorded, not raised
            reason = str(error).split("\n")[0][:160]
            return {"path": name, "kernel": f"fails to compile: {type(error).__name__}: {reason}"}
        first = time.perf_counter() - start
        once = median_seconds(lambda: run(x), 1)
        seconds = median_seconds(lambda: run(x), 2 if once > SLOW else 20)
    source = "\n".join(code)
    kernel = ("onednn qlinear" if "qlinear" in source else "_int_mm" if "_int_mm" in source else
              "float mm" if "mm(" in source else "eager")
    return {"path": name, "kernel": kernel, "ms": seconds * 1e3, "first_call_s": first,
            "relative_output_error": ((out.float() - reference).norm() / reference.norm()).item()}


def main() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(IN, OUT_FEATURES).eval()
    x = torch.randn(TOKENS, IN)
    with torch.no_grad():
        reference = linear(x)
    quantized = effigy.quantize(nn.Sequential(copy.deepcopy(linear)), get_recipe("vidit-q-w8a8"))
    effigy.set_backend(quantized, "graph-int8")
    bf16 = copy.deepcopy(linear).to(torch.bfloat16)
    rows = [measure("fp32 eager", linear, x, reference, None),
            measure("bf16 compiled", lambda v: bf16(v.bfloat16()), x, reference, {}),
            measure("w8a8 graph-int8 eager", quantized, x, reference, None),
            measure("w8a8 compiled, no freezing", quantized, x, reference, {"freezing": False}),
            measure("w8a8 compiled, freezing", quantized, x, reference, {"freezing": True}),
            measure("w8a8 compiled, freezing + max-autotune", quantized, x, reference,
                    {"freezing": True, "max_autotune": True, "max_autotune_gemm_backends": "CPP,ATEN"})]
    for row in rows:
        if "ms" in row:
            row["speedup_vs_fp32_eager"] = rows[0]["ms"] / row["ms"]
    result = {"check": "compiled_int8_lowering", "isa": cpu_isa_class(), "shape": [TOKENS, IN, OUT_FEATURES],
              "machine": machine_facts(), "rows": rows}
    columns = [("path", "path"), ("kernel", "kernel in the compiled code"), ("ms", "ms per call"),
               ("speedup_vs_fp32_eager", "speed-up vs fp32 eager"), ("first_call_s", "first call (s)"),
               ("relative_output_error", "output error vs fp32")]
    markdown = "\n\n".join([
        "# Compiled int8: which inductor setting wins on this CPU",
        f"Command: `python benchmarks/scripts/compiled_int8_lowering.py` (seed 0)  \n{machine_line(result['machine'])}  \n"
        f"One linear layer of DiT-XL/2's MLP ({IN} -> {OUT_FEATURES}) on {TOKENS} "
        "tokens, random weights (speed only), vidit-q-w8a8 on the graph-int8 backend; medians of 20 calls "
        f"(2 where one call takes over {SLOW:g} s), ratios measured in this one run.",
        markdown_table(rows, columns)])
    write_results(result, markdown, OUT, "compiled_int8_lowering")
    print(markdown)


if __name__ == "__main__":
    main()
