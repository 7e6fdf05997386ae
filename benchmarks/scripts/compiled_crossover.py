"""At which batches is compiled W8A8 at least as fast as compiled FP on the shipped digits DiT? At 64 tokens per image the
digits DiT's layers are small, so per-call overheads (quantizing activations, launching kernels) can outweigh
the int8 GEMM's gain. One denoiser call (a CFG pair per image) of the shipped `dit-digits`, fp32 compiled
against `vidit-q-w8a8` compiled (effigy.compile), and bf16 compiled, at growing batches; timed interleaved,
medians of 7 calls after the compile.

    python benchmarks/scripts/compiled_crossover.py   # ~5 min on 2 cores
"""
import copy
from pathlib import Path

import torch

import effigy
from effigy.evaluate.measure import interleaved_medians, machine_facts
from effigy.evaluate.report import machine_line, markdown_table, write_results
from effigy.models.zoo import load_zoo_model
from effigy.recipes import get_recipe

OUT = Path("benchmarks/results/checks")
BATCHES = (2, 8, 32, 128, 256)  # images per call, each a CFG pair (2x the rows)
REPEATS = 7


def inputs(model, images: int) -> dict:
    g = torch.Generator().manual_seed(images)
    side = model.config.sample_size
    labels = torch.arange(2 * images) % 11  # the ten digits and the null class, as a CFG batch holds them
    return {"hidden_states": torch.randn(2 * images, model.config.in_channels, side, side, generator=g),
            "timestep": torch.full((2 * images,), 500), "class_labels": labels}


def main() -> None:
    torch.manual_seed(0)
    # the three models share one forward code object: 3 models x 5 batches is over dynamo's default limit of 8
    # compiled variants, past which a call silently runs eagerly
    torch._dynamo.config.recompile_limit = 64
    fp, _ = load_zoo_model("dit-digits")
    static = {"dynamic": False}  # one compiled graph per batch size, as a server with fixed batches has
    variants = {"fp32 compiled": effigy.compile(copy.deepcopy(fp), **static),
                "bf16 compiled": effigy.compile(copy.deepcopy(fp).to(torch.bfloat16), **static),
                "vidit-q-w8a8 compiled": effigy.compile(effigy.quantize(copy.deepcopy(fp), get_recipe("vidit-q-w8a8")),
                                                        **static)}
    rows = []
    for images in BATCHES:
        batch = inputs(fp, images)
        cast = {k: v.bfloat16() if v.is_floating_point() else v for k, v in batch.items()}
        calls = {name: (lambda m=model, b=(cast if "bf16" in name else batch): m(**b).sample.float())
                 for name, model in variants.items()}
        with torch.no_grad():
            for call in calls.values():
                call()  # compile (static shapes: once per batch)
            seconds, _ = interleaved_medians(calls, REPEATS)
        rows.append({"images": images, **{f"{name} ms": seconds[name] * 1e3 for name in calls},
                     "w8a8 vs fp32 compiled": seconds["fp32 compiled"] / seconds["vidit-q-w8a8 compiled"],
                     "w8a8 vs bf16 compiled": seconds["bf16 compiled"] / seconds["vidit-q-w8a8 compiled"]})
        print(rows[-1], flush=True)
    ahead = [r["images"] for r in rows if r["w8a8 vs fp32 compiled"] >= 1]
    result = {"check": "compiled_crossover", "model": "dit-digits", "machine": machine_facts(), "rows": rows,
              "w8a8_at_least_fp32_compiled_at_images": ahead}
    columns = [("images", "images per call (CFG pairs)"), ("fp32 compiled ms", "fp32 compiled (ms)"),
               ("bf16 compiled ms", "bf16 compiled (ms)"), ("vidit-q-w8a8 compiled ms", "W8A8 compiled (ms)"),
               ("w8a8 vs fp32 compiled", "W8A8 speed-up vs fp32 compiled"),
               ("w8a8 vs bf16 compiled", "vs bf16 compiled")]
    behind = [r["images"] for r in rows if r["images"] not in ahead]
    verdict = (f"Compiled W8A8 is at least as fast as compiled fp32 at {', '.join(map(str, ahead)) or 'no'} images per "
               f"call, and behind it at {', '.join(map(str, behind)) or 'none'}: at 64 tokens per image and 128 "
               "channels the int8 GEMM is cheap, and the per-token quantization around it grows with the rows.")
    markdown = "\n\n".join([
        "# At which batches is compiled W8A8 at least as fast as compiled FP on the shipped digits DiT?",
        f"Command: `python benchmarks/scripts/compiled_crossover.py` (seed 0)  \n{machine_line(result['machine'])}  \n"
        f"One denoiser call of the shipped `dit-digits` (64 tokens per image, a CFG "
        f"pair per image), medians of {REPEATS} interleaved calls after the compile, ratios within this run.",
        markdown_table(rows, columns), verdict])
    write_results(result, markdown, OUT, "compiled_crossover")
    print(markdown)


if __name__ == "__main__":
    main()
