"""Which kernel should LiteVAR's MDWA attention run? (issue 42)

One attention call at the last two scales of the shipped var-digits (4 heads x 32, a CFG batch of 40: the bench's
20 images) and of VAR-d16 (16 heads x 64, a CFG batch of 2), under the scale bench's fixed plan (scales of side <= 4
whole, bands of half-width 2 over the query's own and previous scale, 1 over coarser ones), random inputs:

- dense SDPA over every pair (full attention: what MDWA must beat),
- the masked kernel LiteVAR runs (one SDPA call over all heads with the plan's additive mask),
- the same with a boolean mask (SDPA's other mask form),
- each query's kept keys gathered, head by head (what LiteVAR did before issue 42, in its plainest form: the library's
  kernel kept whole key scales as dense blocks and gathered only the bands),
- flex_attention with the plan's block mask at blocks of 32, 64 and 128 tokens (compiled).

Timed interleaved, median of 7 rounds after a warm-up.

    python benchmarks/scripts/mdwa_kernels.py        # ~2 min on 2 cores

Writes benchmarks/results/checks/mdwa_kernels.{json,md}.
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F

from effigy.attention import litevar
from effigy.attention.multiscale import LiteVARPlan, side_offsets
from effigy.bench.scale_litevar import VAR_D16_SCALES, LiteVARScaleSettings, fixed_plan
from effigy.evaluate.measure import interleaved_medians, machine_facts
from effigy.evaluate.report import machine_line, markdown_table

OUT = Path("benchmarks/results/checks")
SHAPES = {"var-digits": ((1, 2, 3, 4, 6, 8), 4, 32, 40), "VAR-d16": (VAR_D16_SCALES, 16, 64, 2)}
FLEX_BLOCKS = (32, 64, 128)


def plan_for(scales: tuple, heads: int) -> LiteVARPlan:
    signature = {"class": "VARTransformer", "num_layers": 1, "heads": heads, "scales": list(scales)}
    return fixed_plan(signature, LiteVARScaleSettings(), asc=False)


def gathered(q, k, v, plan: LiteVARPlan, scale: int) -> torch.Tensor:
    """Gathering instead of masking: per head, each query's kept keys gathered (equal counts per head), one softmax."""
    outs = []
    for h in range(q.shape[1]):
        rows = plan.key_indices(0, h, scale)
        index = torch.tensor(rows) if rows is not None else torch.arange(k.shape[2]).expand(q.shape[2], -1)
        keys, values = k[:, h][:, index], v[:, h][:, index]  # [B, nq, m, d]
        probs = (torch.einsum("bqd,bqmd->bqm", q[:, h], keys) / q.shape[-1] ** 0.5).softmax(-1)
        outs.append(torch.einsum("bqm,bqmd->bqd", probs, values))
    return torch.stack(outs, 1)


def row(shape: str, scale: int) -> dict:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    scales, heads, head_dim, batch = SHAPES[shape]
    plan = plan_for(scales, heads)
    nq, seen = scales[scale] ** 2, side_offsets(scales)[scale] + scales[scale] ** 2
    mask = litevar.scale_mask(plan, 0, scale)
    keep = mask.additive[0] == 0
    torch.manual_seed(0)
    q, k, v = torch.randn(batch, heads, nq, head_dim), torch.randn(batch, heads, seen, head_dim), torch.randn(
        batch, heads, seen, head_dim)
    flex = torch.compile(flex_attention, dynamic=False)
    calls = {"dense": lambda: F.scaled_dot_product_attention(q, k, v),
             "masked": lambda: litevar.mdwa_attention(q, k, v, mask.additive),
             "bool": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=keep),
             "gather": lambda: gathered(q, k, v, plan, scale)}
    for block in FLEX_BLOCKS:
        block_mask = create_block_mask(lambda b, h, qi, ki: keep[h, qi, ki], None, heads, nq, seen, device="cpu",
                                       BLOCK_SIZE=block)
        calls[f"flex{block}"] = lambda bm=block_mask: flex(q, k, v, block_mask=bm)
    seconds, outputs = interleaved_medians(calls, repeats=7)
    error = max((outputs[name] - outputs["masked"]).abs().max().item() for name in calls if name != "dense")
    return {"model": shape, "query_scale": scales[scale], "queries": nq, "keys": seen, "heads": heads,
            "batch": batch, "kept_fraction": round(mask.kept_pairs / (heads * nq * seen), 4),
            **{f"{name}_ms": round(1e3 * s, 2) for name, s in seconds.items()},
            "masked_vs_dense": round(seconds["dense"] / seconds["masked"], 2),
            "best_skipping_vs_dense": round(seconds["dense"] / min(seconds[n] for n in calls
                                                                    if n.startswith(("gather", "flex"))), 2),
            "max_abs_difference_from_masked": error}


def main() -> None:
    with torch.no_grad():
        rows = [row(shape, scale) for shape, (scales, *_rest) in SHAPES.items()
                for scale in (len(scales) - 2, len(scales) - 1)]
        for r in rows:
            print(r, flush=True)
    facts = machine_facts()
    how = ("Command: `python benchmarks/scripts/mdwa_kernels.py` (seed 0). One MDWA attention call at a query scale "
           "against its cached keys, under the scale bench's fixed plan; random inputs (speed only). Times in ms, "
           "medians of 7 interleaved rounds; x vs dense: dense SDPA time / kernel time (above 1: faster than full "
           "attention). max_abs_difference: every kernel against the masked one (the same pairs).")
    OUT.mkdir(parents=True, exist_ok=True)
    stem = OUT / "mdwa_kernels"
    stem.with_suffix(".json").write_text(json.dumps({"how": how, "machine": facts, "rows": rows}, indent=1) + "\n")
    columns = [("model", "model"), ("query_scale", "query side"), ("keys", "keys"), ("batch", "batch"),
               ("kept_fraction", "kept pairs"), ("dense_ms", "dense SDPA"), ("masked_ms", "masked (LiteVAR)"),
               ("bool_ms", "bool mask"), ("gather_ms", "per-query gather"),
               *[(f"flex{b}_ms", f"flex {b}") for b in FLEX_BLOCKS], ("masked_vs_dense", "masked x vs dense"),
               ("best_skipping_vs_dense", "best skipping kernel x vs dense"),
               ("max_abs_difference_from_masked", "max abs difference")]
    stem.with_suffix(".md").write_text(f"# MDWA attention kernels\n\n{how}  \n{machine_line(facts)}\n\n"
                                       + markdown_table(rows, columns) + "\n")
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
