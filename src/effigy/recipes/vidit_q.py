"""ViDiT-Q quantization recipes for diffusion transformers, and the naive baseline they improve on.

naive-w8a8   per-tensor weights, static per-tensor activations calibrated with min-max: the usual
             post-training baseline, whose single activation scale must cover every timestep,
             token and CFG branch at once.
vidit-q-w8a8 per-output-channel weights and dynamic per-token activations (ViDiT-Q's fine-grained
             grouping): each token of each CFG branch at each timestep gets its own scale.
vidit-q-w4a8 4-bit packed weights after channel balancing: a calibrated SmoothQuant divisor per
             input channel (alpha 0.5, maxima over all calibration timesteps) folded into the weights,
             then dynamic per-token 8-bit activations. ViDiT-Q's Hadamard rotation (``rotate=True``)
             is available but off: on the digits DiT it lowered W4A8 PSNR vs FP (23.8 vs 27.1 dB,
             20 samples): at 8-bit per-token activations the error is the 4-bit weights', which
             the rotation does not help.
vidit-q-w4a8-ts  timestep-aware balancing: a divisor per quarter of the 1000 training timesteps,
             each folded into its own copy of the packed weights (4x the weight bytes).
rtn-w4a16    weight-only: 4-bit weights, one scale per group of 128 input channels, bf16 activations,
             on PyTorch's int4 CPU kernel (the weights stay 4-bit in memory).
vidit-q-w4a16  the same after ViDiT-Q's channel balancing (alpha 0.5).
rtn-w4a8     round-to-nearest 4-bit per-channel weights, per-token 8-bit activations: the uniform
             baseline.
vidit-q-w4a8-mp  the same, with 4/6/8-bit weights chosen per layer group by the metric-decoupled
             sensitivity and the integer program of :mod:`effigy.recipes.vidit_q_mp`
             (an allocation, not a fixed config: see ``mixed_precision_config``).
"""
from __future__ import annotations

from dataclasses import replace

from effigy.core import kernels
from effigy.core.quant import QuantSpec
from effigy.errors import QuantizationError
from effigy.nn.config import FLOAT_ACTIVATION_BITS, QuantConfig
from effigy.recipes.base import register_recipe

register_recipe(QuantConfig(
    weight=QuantSpec(bits=8, granularity="tensor"),
    activation=QuantSpec(bits=8, granularity="tensor", dynamic=False),
    name="naive-w8a8",
))
register_recipe(QuantConfig(
    weight=QuantSpec(bits=8, granularity="channel"),
    activation=QuantSpec(bits=8, granularity="token", dynamic=True),
    name="vidit-q-w8a8",
))
register_recipe(QuantConfig(
    weight=QuantSpec(bits=4, granularity="channel"),
    activation=QuantSpec(bits=8, granularity="token", dynamic=True),
    smooth_alpha=0.5,
    name="vidit-q-w4a8",
))
register_recipe(QuantConfig(
    weight=QuantSpec(bits=4, granularity="channel"),
    activation=QuantSpec(bits=8, granularity="token", dynamic=True),
    smooth_alpha=0.5,
    timestep_ranges=4,
    name="vidit-q-w4a8-ts",
))
register_recipe(QuantConfig(
    weight=QuantSpec(bits=4, granularity="group", group_size=128),
    activation=None,
    backend="int4",
    name="rtn-w4a16",
))
register_recipe(QuantConfig(
    weight=QuantSpec(bits=4, granularity="group", group_size=128),
    activation=None,
    smooth_alpha=0.5,
    backend="int4",
    name="vidit-q-w4a16",
))
register_recipe(QuantConfig(
    weight=QuantSpec(bits=4, granularity="channel"),
    activation=QuantSpec(bits=8, granularity="token", dynamic=True),
    name="rtn-w4a8",
))


def fast_cpu_variant(config: QuantConfig) -> QuantConfig:
    """The same recipe on the fbgemm int8 GEMM, with activations narrowed to what this CPU computes
    exactly (7 bits without VNNI). The new name says so: no silently different numbers."""
    if config.activation is None:
        raise QuantizationError("the fbgemm path needs quantized activations; this recipe is weight-only.")
    act_bits = min(config.activation.bits, kernels.fbgemm_max_activation_bits())
    activation = replace(config.activation, bits=act_bits)
    name = config.name.replace(f"a{config.activation.bits}", f"a{act_bits}") + "-fbgemm"
    per_layer = {layer: bits if bits == FLOAT_ACTIVATION_BITS else min(bits, act_bits)
                 for layer, bits in (config.layer_activation_bits or {}).items()}  # mixed precision's widths too
    return replace(config, activation=activation, backend="fbgemm", name=name, layer_activation_bits=per_layer)
