"""MixDQ (Zhao et al., ECCV 2024, https://arxiv.org/abs/2405.17873): mixed-precision quantization of a
few-step text-to-image model, as recipes on the shared mixed-precision pipeline.

  - layer groups: "content" layers (cross-attention ``attn2``, feed-forward ``ff``) scored by SSIM of the
    generated image against FP, with weights at {2, 4, 8} bits; "quality" layers (self-attention ``attn1``,
    adaLN ``norm1`` where a model has it) scored by SQNR of the denoiser output, at {4, 8};
  - bits: one integer program per part (:mod:`effigy.mixedprec.decoupled`), swept over the overall
    average and the content / quality ratio, picked by image MSE against FP on a validation run;
    activations after the weights, the most sensitive 1% of each part's activation layers in FP;
  - BOS-aware text quantization: the cross-attention K / V of the text's first token through half-precision
    weights (:mod:`effigy.nn.first_token`).

Recipes: ``mixdq-w8a8``, ``mixdq-w4a8`` (per-channel weights, per-token dynamic 8-bit activations) and
``mixdq-w3.66a16`` (weight-only, groups of 128 input channels); ``--average-bits`` sets any other
target.
"""
from __future__ import annotations

from dataclasses import replace

from effigy.core.quant import QuantSpec
from effigy.nn.config import QuantConfig
from effigy.recipes.base import register_recipe
from effigy.recipes.mixed_precision import LayerGroups, MixedPrecisionRecipe, register_mixed_precision

CONTENT, QUALITY = "content", "quality"
CONTENT_BITS, QUALITY_BITS, ACTIVATION_BITS = (2, 4, 8), (4, 8), (4, 8)
MIXDQ_GROUPS = LayerGroups(
    r"^(transformer_blocks\.\d+)\.(attn1|attn2|ff|norm1)\.",
    {"attn2": CONTENT, "ff": CONTENT, "attn1": QUALITY, "norm1": QUALITY},
    bits_of_kind={"attn2": CONTENT_BITS, "ff": CONTENT_BITS, "attn1": QUALITY_BITS, "norm1": QUALITY_BITS},
)
CROSS_ATTENTION_KV = ("*attn2.to_k", "*attn2.to_v")  # the layers that read the text tokens

MIXDQ_BASE_A8 = register_recipe(QuantConfig(
    weight=QuantSpec(bits=8, granularity="channel"),
    activation=QuantSpec(bits=8, granularity="token", dynamic=True),
    fp_first_token=CROSS_ATTENTION_KV,
    name="mixdq-base-a8",
))
MIXDQ_BASE_A16 = register_recipe(QuantConfig(
    weight=QuantSpec(bits=4, granularity="group", group_size=128),
    activation=None,
    fp_first_token=CROSS_ATTENTION_KV,
    name="mixdq-base-a16",
))


def without_bos_handling(config: QuantConfig) -> QuantConfig:
    """The same recipe with the first token quantized like the rest: the BOS ablation."""
    return replace(config, fp_first_token=(), name=f"{config.name}-no-bos")


for _name, _base, _weight_bits, _act_bits in (("mixdq-w8a8", MIXDQ_BASE_A8, 8.0, 8.0),
                                               ("mixdq-w4a8", MIXDQ_BASE_A8, 4.0, 8.0),
                                               ("mixdq-w3.66a16", MIXDQ_BASE_A16, 3.66, None)):
    register_mixed_precision(MixedPrecisionRecipe(
        _name, base=_base.name, groups=MIXDQ_GROUPS, search="mixdq", weight_bits=_weight_bits,
        activation_bits=_act_bits))
