"""The one serialization every training config shares: a dataclass that round-trips through JSON."""
from __future__ import annotations

from typing import TypeVar

from effigy.errors import CheckpointError
from effigy.serialize import config_from_dict, config_to_dict

T = TypeVar("T", bound="TrainConfig")


class TrainConfig:
    """Mixin for the dataclass configs stored in the zoo manifest (and in a VAR's ``config.json``).

    Written by :func:`effigy.serialize.config_to_dict` with a format tag naming the class
    (``effigy-train-config/<Class>/1``) and read back by the typed serialiser, like every other effigy file:
    an unknown key, a wrong type or another class's tag is one :class:`CheckpointError`, never a silently
    dropped setting. Records written before the tag existed (the shipped manifest's) are read untagged."""

    FORMAT = "effigy-train-config/TrainConfig/1"

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.FORMAT = f"effigy-train-config/{cls.__name__}/1"

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls: type[T], data: dict) -> T:
        return config_from_dict(cls, data, CheckpointError, untagged_ok=True)
