"""ViDiT-Q's metric-decoupled mixed precision (https://arxiv.org/abs/2406.02540): the metric map and the
layer groups of a diffusers DiT / PixArt transformer, registered on the shared pipeline of
:mod:`effigy.recipes.mixed_precision`.

Every target layer belongs to a (block, kind) with kind one of
  attn1  self-attention projections                     -> scored by visual quality against the FP output
  ff     MLP                                            -> visual quality
  attn2  cross-attention (text)                         -> text-image alignment
  norm1  adaLN modulation (scale/shift of every token)  -> visual quality
With ``granularity="layer"`` (default) each linear layer gets its own width (q, k, v and output
projections apart); with ``"block"``, all layers of one (block, kind). The history of these choices is
in docs/notes/vidit-q.md.
"""
from __future__ import annotations

from effigy.recipes.mixed_precision import LayerGroups, MixedPrecisionRecipe, register_mixed_precision

VIDIT_Q_GROUPS = LayerGroups(r"^(transformer_blocks\.\d+)\.(attn1|attn2|ff|norm1)\.",
                             {"attn1": "visual", "ff": "visual", "attn2": "alignment", "norm1": "visual"})
VIDIT_Q_MP = register_mixed_precision(MixedPrecisionRecipe("vidit-q-w4a8-mp", base="vidit-q-w4a8", groups=VIDIT_Q_GROUPS))
