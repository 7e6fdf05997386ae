"""The scale bench's DiT-XL/2 call on a GPU: fp32, bf16, fp16 and ViDiT-Q W8A8 on ``torch._int_mm``.

Random weights (speed and memory only). CUDA events time each call; variants interleaved.
Run through benchmarks/gpu/run.sh; ``--device cpu`` runs the same code here for a check.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from effigy.bench.scale import build_dit, dit_inputs
from effigy.evaluate.report import markdown_table
from effigy.memory import held_bytes
from effigy.nn.quantize import quantize
from effigy.recipes import get_recipe

COLUMNS = [("variant", "variant"), ("tokens", "tokens"), ("speedup_vs_fp32", "speed-up vs fp32"),
           ("latency_ms", "ms"), ("relative_output_error", "output error vs fp32"), ("held_bytes", "bytes held"),
           ("peak_memory_mib", "peak device memory (MiB)")]


def variants(architecture: str, tokens: int, device: str) -> dict:
    fp32 = build_dit(architecture, tokens, 0)
    built = {"fp32": fp32}
    for dtype in (torch.bfloat16, torch.float16):
        built[str(dtype).split(".")[1]] = build_dit(architecture, tokens, 0).to(dtype)
    w8a8 = replace(get_recipe("vidit-q-w8a8"), backend="int", name="vidit-q-w8a8 int")
    built["vidit-q-w8a8 int (_int_mm)"] = quantize(build_dit(architecture, tokens, 0), w8a8)
    return {name: model.to(device) for name, model in built.items()}


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def run(architecture: str, tokens: int, device: str, repeats: int) -> list[dict]:
    models = variants(architecture, tokens, device)
    inputs = {k: v.to(device) for k, v in dit_inputs(models["fp32"], 2, 0).items()}

    def call(name):
        model = models[name]
        dtype = next(model.parameters()).dtype
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        return model(**cast).sample.float()

    outputs = {name: call(name) for name in models}
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name in models:
            _sync(device)
            start = time.perf_counter()
            call(name)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    fp = statistics.median(times["fp32"])
    reference = outputs["fp32"]
    return [{"variant": name, "tokens": tokens, "latency_ms": 1e3 * statistics.median(t),
             "speedup_vs_fp32": fp / statistics.median(t), "held_bytes": held_bytes(models[name]),
             "relative_output_error": ((outputs[name] - reference).norm() / reference.norm()).item(),
             "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None}
            for name, t in times.items()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", default="256")
    parser.add_argument("--architecture", default="dit-xl-2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("gpu_out"))
    args = parser.parse_args()
    rows = [row for n in args.tokens.split(",") for row in run(args.architecture, int(n), args.device, args.repeats)]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_gpu.json").write_text(json.dumps({"device": device_name, "torch": torch.__version__,
                                                         "rows": rows}, indent=2) + "\n")
    (args.out / "scale_gpu.md").write_text(f"# {args.architecture} (random weights) on {device_name}\n\n"
                                          f"torch {torch.__version__}; int4: no CUDA int4 path in effigy yet.\n\n"
                                          + markdown_table(rows, COLUMNS) + "\n")
    print(markdown_table(rows, COLUMNS))


if __name__ == "__main__":
    main()
