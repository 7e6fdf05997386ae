"""``QuantConfig``: what to quantize in a model and how, as data that round-trips through JSON."""
from __future__ import annotations

from dataclasses import dataclass, field

from effigy.core.quant import QuantizationError, QuantSpec

# Embedders (patch, timestep, class, caption) and the final projection stay in floating point by
# default, as in ViDiT-Q: they are small, run once per sample, and their errors propagate everywhere.
# Every linear layer inside the transformer blocks, adaLN modulation included, is quantized.
DEFAULT_IGNORE = ("pos_embed*", "*emb*", "proj_out*", "*norm_out*", "adaln_single*", "caption_projection*")


@dataclass
class QuantConfig:
    """Weight and activation specs plus the fnmatch patterns that pick the linear layers to quantize."""

    weight: QuantSpec = field(default_factory=lambda: QuantSpec(bits=8, granularity="channel"))
    activation: QuantSpec | None = field(
        default_factory=lambda: QuantSpec(bits=8, granularity="token", dynamic=True)
    )
    include: tuple[str, ...] = ("*",)
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    backend: str = "reference"
    name: str = "custom"

    def __post_init__(self) -> None:
        self.include, self.ignore = tuple(self.include), tuple(self.ignore)
        if self.weight.granularity in ("token",) or not self.weight.symmetric:
            raise QuantizationError(
                "weights must be symmetric with tensor, channel or group granularity "
                f"(got granularity={self.weight.granularity!r}, symmetric={self.weight.symmetric})."
            )
        if self.activation is not None and self.activation.granularity == "token" and not self.activation.dynamic:
            raise QuantizationError("per-token activation scales must be dynamic: set dynamic=True.")

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "weight": self.weight.to_dict(),
            "activation": None if self.activation is None else self.activation.to_dict(),
            "include": list(self.include),
            "ignore": list(self.ignore),
            "backend": self.backend,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "QuantConfig":
        try:
            return cls(
                weight=QuantSpec.from_dict(data["weight"]),
                activation=None if data.get("activation") is None else QuantSpec.from_dict(data["activation"]),
                include=tuple(data.get("include", ("*",))),
                ignore=tuple(data.get("ignore", DEFAULT_IGNORE)),
                backend=data.get("backend", "reference"),
                name=data.get("name", "custom"),
            )
        except KeyError as missing:
            raise QuantizationError(f"quantization config lacks the field {missing}; is this an effigy file?") from None
