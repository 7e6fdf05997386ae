"""LiteVAR's low-bit quantization (Xie et al., https://arxiv.org/abs/2411.17178) for next-scale prediction
transformers, as recipes over the quantization core.

litevar-w8a8  8-bit per-output-channel weights, dynamic per-token 8-bit activations;
litevar-w6a6  6-bit weights, 6-bit activations;
litevar-w4a8  4-bit weights, 8-bit activations.

Every linear layer of the transformer blocks is quantized (attention projections, the AdaLN modulation, the
MLP's first linear) except the MLP's second linear, which LiteVAR keeps in floating point: its input follows
the GELU and has the widest range. Embeddings, the input projection and the output head stay in floating
point as in ViDiT-Q. Attention itself runs with per-token queries and keys at the activation width and the
attention probabilities at a static 8-bit scale (:class:`~effigy.attention.litevar.AttentionQuant`, simulated).
"""
from __future__ import annotations

from effigy.attention.litevar import AttentionQuant
from effigy.core.quant import QuantSpec
from effigy.errors import QuantizationError
from effigy.nn.config import QuantConfig
from effigy.recipes.base import RECIPES, recipe_names, register_recipe

LITEVAR_INCLUDE = ("blocks.*",)
LITEVAR_IGNORE = ("*.ff.2",)  # the MLP's second linear (after the GELU) stays in floating point
PROBABILITY_BITS = 8

for _weight_bits, _act_bits in ((8, 8), (6, 6), (4, 8)):
    register_recipe(QuantConfig(
        weight=QuantSpec(bits=_weight_bits, granularity="channel"),
        activation=QuantSpec(bits=_act_bits, granularity="token", dynamic=True),
        include=LITEVAR_INCLUDE, ignore=LITEVAR_IGNORE, name=f"litevar-w{_weight_bits}a{_act_bits}",
    ), kind="litevar")

LITEVAR_RECIPES = recipe_names("litevar")


def litevar_attention_quant(recipe: str) -> AttentionQuant:
    """The simulated attention numerics that go with a LiteVAR recipe: queries and keys at its activation
    width, probabilities at 8 bits."""
    if recipe not in LITEVAR_RECIPES:
        raise QuantizationError(f"{recipe!r} is not a LiteVAR recipe: choose one of {', '.join(LITEVAR_RECIPES)}.")
    return AttentionQuant(qk_bits=RECIPES.get(recipe).activation.bits, probs_bits=PROBABILITY_BITS)
