"""``QuantConfig``: what to quantize in a model and how, as data that round-trips through JSON."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from fnmatch import fnmatch
from typing import ClassVar

from effigy.core.hadamard import is_power_of_two
from effigy.core.quant import QuantizationError, QuantSpec
from effigy.serialize import config_from_dict, config_to_dict

# Embedders (patch, timestep, class, caption) and the final projection stay in floating point by
# default, as in ViDiT-Q: they are small, run once per sample, and their errors propagate everywhere.
# Every linear layer inside the transformer blocks, adaLN modulation included, is quantized.
DEFAULT_IGNORE = ("pos_embed*", "*emb*", "proj_out*", "*norm_out*", "adaln_single*", "caption_projection*")
FLOAT_ACTIVATION_BITS = 16  # in layer_activation_bits: that layer's activations stay in floating point


@dataclass(frozen=True)
class QuantConfig:
    """Weight and activation specs plus the fnmatch patterns that pick the linear layers to quantize.

    ``smooth_alpha`` turns on channel balancing (a calibrated divisor per input channel, folded into
    the weights); ``timestep_ranges`` > 1 calibrates one divisor per range of diffusion timesteps
    (each with its own weight copy); ``rotate`` adds a Hadamard rotation after it on layers whose
    input size is a power of two; ``layer_bits`` gives single layers another weight bit-width
    (mixed precision); ``layer_activation_bits`` another activation width (16: floating point).
    ``fp_first_token`` names layers (fnmatch patterns) whose first input token takes a half-precision
    copy of the weights (MixDQ's BOS-aware text quantization; see :mod:`effigy.nn.first_token`).
    Frozen: a recipe looked up by name is shared, so derive a new one with ``dataclasses.replace``.
    """

    FORMAT: ClassVar[str] = "effigy-quant-config/1"

    weight: QuantSpec = field(default_factory=lambda: QuantSpec(bits=8, granularity="channel"))
    activation: QuantSpec | None = field(
        default_factory=lambda: QuantSpec(bits=8, granularity="token", dynamic=True)
    )
    include: tuple[str, ...] = ("*",)
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    backend: str = "reference"
    name: str = "custom"
    smooth_alpha: float | None = None
    rotate: bool = False
    layer_bits: dict[str, int] = field(default_factory=dict)
    timestep_ranges: int = 1  # >1: a balancing divisor (and weight copy) per range of timesteps
    num_train_timesteps: int = 1000
    layer_activation_bits: dict[str, int] = field(default_factory=dict)
    fp_first_token: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "include", tuple(self.include))
        object.__setattr__(self, "ignore", tuple(self.ignore))
        object.__setattr__(self, "layer_bits", {name: int(bits) for name, bits in self.layer_bits.items()})
        for bits in set(self.layer_bits.values()):
            replace(self.weight, bits=bits)  # validates the bit-width with QuantSpec's own message
        object.__setattr__(self, "layer_activation_bits",
                           {name: int(bits) for name, bits in self.layer_activation_bits.items()})
        object.__setattr__(self, "fp_first_token", tuple(self.fp_first_token))
        self._check_activation_widths()
        if self.weight.granularity in ("token",) or not self.weight.symmetric:
            raise QuantizationError(
                "weights must be symmetric with tensor, channel or group granularity "
                f"(got granularity={self.weight.granularity!r}, symmetric={self.weight.symmetric})."
            )
        if self.activation is not None and self.activation.granularity == "token" and not self.activation.dynamic:
            raise QuantizationError("per-token activation scales must be dynamic: set dynamic=True.")
        if self.timestep_ranges > 1 and self.smooth_alpha is None:
            raise QuantizationError("timestep_ranges > 1 gives each range its own channel-balancing divisor: "
                                    "set smooth_alpha too (e.g. 0.5).")
        if self.timestep_ranges > 1 and self.activation is not None and not self.activation.dynamic:
            raise QuantizationError("timestep_ranges > 1 works with dynamic activation scales only.")

    def _check_activation_widths(self) -> None:
        if self.layer_activation_bits and self.activation is None:
            raise QuantizationError("layer_activation_bits needs quantized activations; this recipe is weight-only.")
        for bits in set(self.layer_activation_bits.values()) - {FLOAT_ACTIVATION_BITS}:
            replace(self.activation, bits=bits)

    def activation_spec_for(self, layer: str) -> QuantSpec | None:
        """The layer's activation spec: the recipe's, at the layer's own width, or None (floating point)."""
        bits = self.layer_activation_bits.get(layer)
        if bits is None:
            return self.activation
        return None if bits == FLOAT_ACTIVATION_BITS else replace(self.activation, bits=bits)

    def splits_first_token(self, layer: str) -> bool:
        return any(fnmatch(layer, pattern) for pattern in self.fp_first_token)

    def weight_spec_for(self, layer: str) -> QuantSpec:
        bits = self.layer_bits.get(layer)
        return self.weight if bits is None else replace(self.weight, bits=bits)

    def rotates(self, in_features: int) -> bool:
        return self.rotate and is_power_of_two(in_features)

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantConfig":
        """The config saved by :meth:`to_dict` (files from before the format tag load too)."""
        if isinstance(data, dict) and "weight" not in data:
            raise QuantizationError("quantization config lacks the field 'weight'; is this an effigy file?")
        return config_from_dict(cls, data, QuantizationError, untagged_ok=True)
