"""The one serialization every training config shares: a dataclass that round-trips through JSON."""
from __future__ import annotations

from dataclasses import asdict, fields
from typing import TypeVar

T = TypeVar("T", bound="TrainConfig")


class TrainConfig:
    """Mixin for dataclass configs stored in the zoo manifest; unknown keys from other versions are ignored."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict) -> T:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
