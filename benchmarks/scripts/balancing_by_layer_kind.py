"""Which layer kinds should ViDiT-Q W4A8 balance? Channel-balancing divisors (alpha 0.5) kept for every
layer, for none (= RTN W4A8), or for all but one kind (their divisors set to 1), sampled on the quant
bench's validation run.

    HF_HUB_OFFLINE=1 python benchmarks/scripts/balancing_by_layer_kind.py [dit-digits|t2i-shapes]   # ~4 min
"""
import copy
import fnmatch
import sys

import torch
from validation_run import validation_run, write_check

from effigy.nn.quantize import quantize
from effigy.recipes import get_recipe

UNBALANCED = {  # variant -> layers left unbalanced
    "balanced everywhere (vidit-q-w4a8)": [], "nowhere (rtn-w4a8)": ["*"],
    "all but self-attention": ["*attn1.*"], "all but self-attention q/k/v": ["*attn1.to_[qkv]"],
    "all but self-attention output": ["*attn1.to_out*"], "all but cross-attention": ["*attn2.*"],
    "all but MLP": ["*.ff.*"], "all but adaLN": ["*norm1.linear"], "MLP only": ["*attn*", "*norm1.linear"],
}
run = validation_run(sys.argv[1] if len(sys.argv) > 1 else "dit-digits")
rows = []
for label, patterns in UNBALANCED.items():
    unbalanced = [n for n in run.divisors if any(fnmatch.fnmatch(n, p) for p in patterns)]
    if patterns and not unbalanced:
        continue  # no such layers here (no cross-attention in the digits DiT, no adaLN linears in PixArt's blocks)
    kept = {n: torch.ones_like(d) if n in unbalanced else d for n, d in run.divisors.items()}
    model = quantize(copy.deepcopy(run.world.fp_model), get_recipe("vidit-q-w4a8"), run.world.sample_calibration,
                     input_divisors=kept)
    rows.append({"balanced": label, "unbalanced_layers": len(unbalanced), **run.quality(model)})
write_check(run, "balancing_by_layer_kind", "W4A8 channel balancing by layer kind", rows,
            [("balanced", "balanced layers"), ("unbalanced_layers", "layers unbalanced")])
