"""Which kernel should DiTFastAttn's window attention run, by token count? (issue 42, first step)

One attention call of a PixArt-alpha / DiT-XL/2-sized layer (16 heads x 72, a CFG batch of 2), window 1/8 of the
tokens (half window N/16), random inputs: dense SDPA over all pairs (what full attention costs), the chunked band
kernel and the flex_attention block-sparse kernel (compiled), timed interleaved (median of 5 rounds after a
warm-up). The crossover sets `effigy.attention.window.FLEX_MIN_TOKENS`.

    python benchmarks/scripts/band_kernels.py        # ~3 min on 2 cores
    python benchmarks/scripts/band_kernels.py 16384  # one token count (~6 min): band_kernels_16384.{json,md}

Writes benchmarks/results/checks/band_kernels.{json,md}.
"""
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from effigy.attention.window import band_attention, band_pairs
from effigy.evaluate.measure import interleaved_medians, machine_facts
from effigy.evaluate.report import machine_line, markdown_table

OUT = Path("benchmarks/results/checks")
TOKENS = (64, 256, 1024, 2048, 4096)
BATCH, HEADS, HEAD_DIM = 2, 16, 72


def row(tokens: int) -> dict:
    torch.manual_seed(0)
    q, k, v = (torch.randn(BATCH, HEADS, tokens, HEAD_DIM) for _ in range(3))
    half = max(1, tokens // 16)
    calls = {"dense": lambda: F.scaled_dot_product_attention(q, k, v),
             "chunked": lambda: band_attention(q, k, v, half, kernel="chunked"),
             "flex": lambda: band_attention(q, k, v, half, kernel="flex")}
    seconds, _ = interleaved_medians(calls, repeats=5)
    return {"tokens": tokens, "half_window": half, "band_pairs_fraction": band_pairs(tokens, half) / tokens ** 2,
            **{f"{name}_ms": round(1e3 * s, 2) for name, s in seconds.items()},
            "chunked_speedup": round(seconds["dense"] / seconds["chunked"], 2),
            "flex_speedup": round(seconds["dense"] / seconds["flex"], 2)}


def main() -> None:
    chosen = tuple(int(t) for t in sys.argv[1:]) or TOKENS
    with torch.no_grad():
        rows = [row(tokens) for tokens in chosen]
        for r in rows:
            print(r, flush=True)
    facts = machine_facts()
    arguments = "".join(f" {t}" for t in sys.argv[1:])
    how = (f"Command: `python benchmarks/scripts/band_kernels.py{arguments}` (seed 0). One attention call, 16 heads x 72, batch 2, "
           "window 1/8 of the tokens; random inputs (speed only). Speed-up: dense SDPA time / kernel time, timed "
           "interleaved. band_pairs_fraction: the pairs the automatically chosen kernel computes over all pairs.")
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / ("band_kernels" + "".join(f"_{t}" for t in sys.argv[1:]))
    stem.with_suffix(".json").write_text(json.dumps({"how": how, "machine": facts, "rows": rows}, indent=1) + "\n")
    columns = [("tokens", "tokens"), ("half_window", "half window"), ("band_pairs_fraction", "pairs computed (auto)"),
               ("dense_ms", "dense SDPA ms"), ("chunked_ms", "chunked band ms"), ("flex_ms", "flex block-sparse ms"),
               ("chunked_speedup", "chunked vs dense"), ("flex_speedup", "flex vs dense")]
    stem.with_suffix(".md").write_text(f"# Band attention kernels by token count\n\n{how}  \n{machine_line(facts)}\n\n"
                                       + markdown_table(rows, columns) + "\n")
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
