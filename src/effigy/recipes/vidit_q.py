"""ViDiT-Q quantization recipes for diffusion transformers, and the naive baseline they improve on.

naive-w8a8   per-tensor weights, static per-tensor activations calibrated with min-max: the usual
             post-training baseline, whose single activation scale must cover every timestep,
             token and CFG branch at once.
vidit-q-w8a8 per-output-channel weights and dynamic per-token activations (ViDiT-Q's fine-grained
             grouping): each token of each CFG branch at each timestep gets its own scale.
"""
from __future__ import annotations

from dataclasses import replace

from effigy.core import kernels
from effigy.core.quant import QuantSpec
from effigy.errors import QuantizationError
from effigy.nn.config import QuantConfig

RECIPES: dict[str, QuantConfig] = {
    "naive-w8a8": QuantConfig(
        weight=QuantSpec(bits=8, granularity="tensor"),
        activation=QuantSpec(bits=8, granularity="tensor", dynamic=False),
        name="naive-w8a8",
    ),
    "vidit-q-w8a8": QuantConfig(
        weight=QuantSpec(bits=8, granularity="channel"),
        activation=QuantSpec(bits=8, granularity="token", dynamic=True),
        name="vidit-q-w8a8",
    ),
}


def get_recipe(name: str) -> QuantConfig:
    if name not in RECIPES:
        raise QuantizationError(f"unknown recipe {name!r}: choose one of {', '.join(RECIPES)}.")
    return RECIPES[name]


def fast_cpu_variant(config: QuantConfig) -> QuantConfig:
    """The same recipe on the fbgemm int8 GEMM, with activations narrowed to what this CPU computes
    exactly (7 bits without VNNI). The new name says so: no silently different numbers."""
    if config.activation is None:
        raise QuantizationError("the fbgemm path needs quantized activations; this recipe is weight-only.")
    act_bits = min(config.activation.bits, kernels.fbgemm_max_activation_bits())
    activation = replace(config.activation, bits=act_bits)
    name = config.name.replace(f"a{config.activation.bits}", f"a{act_bits}") + "-fbgemm"
    return replace(config, activation=activation, backend="fbgemm", name=name)
