"""Is the fbgemm int8 path faster than fp32 end to end, or was one bench run lucky? The bench's latency
measurement (20 digits images, 20 steps, variants interleaved, median of 3) repeated 5 times on fresh
interleavings, for FP, ViDiT-Q W8A8 and W4A8 on the reference path and on fast_cpu_variant (fbgemm; 8-bit
activations on VNNI CPUs, 7-bit without). Prints each repeat's latency ratio vs FP and their range.

    HF_HUB_OFFLINE=1 python benchmarks/scripts/fbgemm_latency_repeats.py [out_dir]   # ~4 min on 2 cores
"""
import copy
import json
import sys
from pathlib import Path

from effigy.bench.quant import QuantBenchSettings, Variant, measure_speed_and_memory
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.evaluate.suites import load_suite
from effigy.nn.quantize import quantize
from effigy.recipes import fast_cpu_variant, get_recipe

REPEATS = 5
out = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/quant/dit-digits/vnni")
settings = QuantBenchSettings(model="dit-digits", seed=0, measure_memory=False)
world = load_suite(settings.model, settings)
configs = [get_recipe(name) for name in ("vidit-q-w8a8", "vidit-q-w4a8")]
configs += [fast_cpu_variant(config) for config in configs]
variants = [Variant("fp32", world.fp_model)] + [
    Variant(c.name, quantize(copy.deepcopy(world.fp_model), c, world.sample_calibration), c) for c in configs]
ratios: dict[str, list[float]] = {v.name: [] for v in variants[1:]}
for _ in range(REPEATS):
    measure_speed_and_memory(variants, world, settings, lambda *_: lambda: None)
    fp_ms = variants[0].row["latency_ms_per_image"]
    for v in variants[1:]:
        ratios[v.name].append(round(v.row["latency_ms_per_image"] / fp_ms, 3))
rows = [{"variant": name, **{f"repeat {i + 1}": r for i, r in enumerate(rs)}, "min": min(rs), "max": max(rs)}
        for name, rs in ratios.items()]
columns = [(k, k) for k in rows[0]]
text = (f"# Latency vs FP, repeated\n\nCommand: `python benchmarks/scripts/fbgemm_latency_repeats.py {out}`. Digits DiT, "
        f"{settings.latency_samples} images, {settings.steps} steps; each repeat is the bench's own measurement "
        f"(variants interleaved, median of {settings.latency_repeats}).  \n{machine_line(machine_facts())}\n\n"
        + markdown_table(rows, columns) + "\n")
out.mkdir(parents=True, exist_ok=True)
(out / "latency_repeats.json").write_text(json.dumps({"machine": machine_facts(), "ratios_vs_fp": ratios}, indent=2))
(out / "latency_repeats.md").write_text(text)
print(text)
