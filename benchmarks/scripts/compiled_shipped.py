"""Compiled rows of the shipped generators at their benches' settings: is compiled W8A8 / W4A8 at least as fast as
compiled FP at the bench's batch, and from which batch is it?

The same sections `effigy bench quant` / `bench mixdq` / `demo` add to their results (effigy.bench.compiled), run
here without those benches' quality runs and mixed-precision searches: per model, the eager variants timed
interleaved (as the bench times them), then FP and the quantized variants through effigy.compile timed beside
the eager FP, then one denoiser call per batch for compiled W8A8 against compiled FP.

    python benchmarks/scripts/compiled_shipped.py            # ~15 min on 2 cores
    python benchmarks/scripts/compiled_shipped.py dit-digits # one model
"""
import sys
from pathlib import Path

import torch

from effigy.bench.compiled import crossover_sentence
from effigy.bench.mixdq import MixDQBenchSettings
from effigy.bench.quant import QuantBenchSettings, compiled_sections, measure_latency, quantized_variants
from effigy.bench.quant_report import COMPILED_NOTE, render_crossover
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.evaluate.suites import load_suite
from effigy.memory import held_bytes
from effigy.recipes import get_recipe

OUT = Path("benchmarks/results/checks")
RECIPES = ("vidit-q-w8a8", "vidit-q-w4a8")
# each model at its bench's settings: the digits DiT and the text-to-image teacher as `bench quant` runs them (20
# DPM-Solver steps, a CFG pair per image), the few-step student as `bench mixdq` does (4 LCM steps, no CFG)
MODELS = {"dit-digits": (QuantBenchSettings(), 2), "t2i-shapes": (QuantBenchSettings(model="t2i-shapes"), 2),
          "t2i-shapes-lcm": (MixDQBenchSettings(), 1)}
# the first run of this script compiled all three models in one dynamo cache: the student's graphs were those
# compiled for its teacher (the same structure), so its 'first call' is not a compile time
FIRST_RUN_NOTE = ("'first call' of t2i-shapes-lcm: in this run its compiled W8A8 / W4A8 graphs were the ones compiled "
                  "for t2i-shapes (the same structure, one process, one dynamo cache), so those first calls are not "
                  "compile times; the script now resets dynamo between models.")
COLUMNS = [("variant", "variant"), ("backend", "matmul"), ("held_bytes", "bytes held"),
           ("latency_ms_per_image", "ms / image"), ("latency_ratio_vs_fp", "latency vs FP"),
           ("latency_ratio_vs_fp_compiled", "latency vs FP compiled"), ("first_call_s", "first call (s)"),
           ("output_error_vs_eager", "output vs eager")]


def progress(description: str, total: int):
    print(f"{description}: 0/{total}", flush=True)
    return lambda: None


@torch.no_grad()
def one_model(name: str) -> dict:
    settings, rows_per_image = MODELS[name]
    torch._dynamo.reset()  # each model's first calls compile (t2i-shapes-lcm has t2i-shapes' structure)
    settings = type(settings)(**{**settings.__dict__, "recipes": RECIPES, "compiled": RECIPES})
    world = load_suite(name, settings)
    variants = quantized_variants(world, [get_recipe(r) for r in RECIPES])
    measure_latency(variants, world, settings, progress)
    for variant in variants:
        variant.row.update(variant=variant.name, held_bytes=held_bytes(variant.model),
                           backend="float" if variant.config is None else variant.config.backend,
                           latency_ratio_vs_fp=variant.row["latency_ms_per_image"]
                           / variants[0].row["latency_ms_per_image"])
    compiled, crossover = compiled_sections(world, variants, settings, {"latency_ms_per_image": world.sample_latency},
                                            progress, rows_per_image)
    return {"model": name, "steps": settings.steps, "latency_samples": settings.latency_samples,
            "latency_repeats": settings.latency_repeats, "rows_per_image": rows_per_image,
            "rows": [v.row for v in variants + compiled], "crossover": crossover}


def render(result: dict) -> str:
    parts = ["# Compiled rows of the shipped generators at their benches' settings",
             f"Command: `{result['command']}` (seed 0)  \n{machine_line(result['machine'])}",
             "Eager rows: the bench's eager variants timed interleaved (eager integer timings are eager). "
             + COMPILED_NOTE, FIRST_RUN_NOTE if not result.get("dynamo_reset_per_model") else ""]
    for model in result["models"]:
        cfg = "a CFG pair per image" if model["rows_per_image"] == 2 else "no CFG (guidance distilled)"
        parts += [f"## {model['model']}",
                  f"Latency: {model['latency_samples']} images, {model['steps']} steps, {cfg}, median of "
                  f"{model['latency_repeats']} interleaved runs.",
                  markdown_table(model["rows"], COLUMNS),
                  render_crossover(model["crossover"]).strip()]
    return "\n\n".join(p for p in parts if p)


def main() -> None:
    torch.manual_seed(0)
    names = sys.argv[1:] or list(MODELS)
    result = {"check": "compiled_shipped", "command": "python benchmarks/scripts/compiled_shipped.py "
              + " ".join(sys.argv[1:]), "machine": machine_facts(), "models": [one_model(n) for n in names],
              "dynamo_reset_per_model": True}
    for model in result["models"]:
        print(model["model"], crossover_sentence(model["crossover"]))
    stem = "compiled_shipped" if len(names) == len(MODELS) else "compiled_shipped_" + "_".join(names)
    write_results(result, render(result), OUT, stem)
    print(render(result))


if __name__ == "__main__":
    main()
