"""Sensitivity tables: how much a quality metric suffers when one layer group runs at one bit-width.

A table is plain data (saved as JSON) so an allocation can be recomputed under another budget, or
audited, without re-running the expensive measurement that filled it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from effigy.errors import QuantizationError


@dataclass
class SensitivityTable:
    """``scores[group][bits]``: the loss in quality (larger is worse) when only ``group`` is quantized
    to ``bits``. ``sizes[group]`` is the number of parameters (or elements) whose storage the group's
    bit-width decides; ``metric[group]`` names the metric that scored it (metric-decoupled sensitivity).
    """

    scores: dict[str, dict[int, float]]
    sizes: dict[str, int]
    metric: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.scores = {g: {int(b): float(s) for b, s in row.items()} for g, row in self.scores.items()}
        self.sizes = {g: int(n) for g, n in self.sizes.items()}
        missing = set(self.scores) ^ set(self.sizes)
        if missing:
            raise QuantizationError(f"sensitivity table: groups {sorted(missing)} lack either scores or sizes.")
        for group, row in self.scores.items():
            if not row:
                raise QuantizationError(f"sensitivity table: group {group!r} has no bit-width scored.")
            bad = [b for b, s in row.items() if not math.isfinite(s)]
            if bad:
                raise QuantizationError(f"sensitivity table: group {group!r} has non-finite scores at bits {bad}.")

    @property
    def groups(self) -> list[str]:
        return list(self.scores)

    def to_dict(self) -> dict:
        return {"scores": {g: {str(b): s for b, s in row.items()} for g, row in self.scores.items()},
                "sizes": self.sizes, "metric": self.metric}

    @classmethod
    def from_dict(cls, data: dict) -> "SensitivityTable":
        return cls(scores=data["scores"], sizes=data["sizes"], metric=data.get("metric", {}))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "SensitivityTable":
        from effigy.serialize import read_json_file

        data = read_json_file(path, "a sensitivity table (re-run the sensitivity analysis)", QuantizationError)
        try:
            return cls.from_dict(data)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise QuantizationError(f"{path} is not a sensitivity table ({err}); re-run the sensitivity analysis.") from None
