"""What every side-by-side bench shares: one row per variant (a model, or hooks installed on the suite's
model), latency measured with all variants interleaved, and changes against the baseline row.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn

from effigy.evaluate.measure import interleaved_medians

RESULT_SCHEMA = 2  # the layout of every bench's result JSON; older files re-render with the code that wrote them


@dataclass
class Variant:
    """One row of a bench.

    Attributes:
        name: the row's name.
        model: its own model (a quantized copy), or None for the suite's FP model.
        config: the quantization recipe that built ``model``, if any.
        family / setting: for sweeps (DiTFastAttn thresholds, cache settings).
        install: hooks to put on the model before each use; returns a reader of what they counted.
        remove: takes them off again.
    """

    name: str
    model: nn.Module | None = None
    config: object | None = None
    family: str = ""
    setting: object = None
    install: Callable[[nn.Module], Callable[[], dict]] | None = None
    remove: Callable[[nn.Module], None] | None = None
    images: torch.Tensor | None = None
    row: dict = field(default_factory=dict)

    @contextmanager
    def active(self, default_model: nn.Module) -> Iterator[tuple[nn.Module, Callable[[], dict]]]:
        """(the model to run, a reader of the hooks' tally) with the variant's hooks on, off again after."""
        model = self.model if self.model is not None else default_model
        read = self.install(model) if self.install else dict
        try:
            yield model, read
        finally:
            if self.remove:
                self.remove(model)


def interleaved_latency(variants: list[Variant], default_model: nn.Module, run: Callable[[nn.Module], object],
                        repeats: int, after_round: Callable[[], None] = lambda: None) -> dict[str, float]:
    """Median seconds of ``run(model)`` per variant, all variants interleaved over ``repeats`` rounds after
    one warm-up round (weight caches, fbgemm prepacking), so machine noise hits them alike."""
    return _interleaved_runs(variants, default_model, run, repeats, after_round)[0]


def interleaved_ms_per_image(variants: list[Variant], default_model: nn.Module,
                             run: Callable[[nn.Module], torch.Tensor], repeats: int,
                             after_round: Callable[[], None] = lambda: None) -> dict[str, float]:
    """:func:`interleaved_latency` per image: each variant's median in milliseconds over the images its warm-up
    run returned (no extra run to count them)."""
    seconds, outputs = _interleaved_runs(variants, default_model, run, repeats, after_round)
    return {name: 1000 * s / len(outputs[name]) for name, s in seconds.items()}


def _interleaved_runs(variants: list[Variant], default_model: nn.Module, run: Callable[[nn.Module], object],
                      repeats: int, after_round: Callable[[], None]) -> tuple[dict[str, float], dict[str, object]]:
    def call(variant: Variant) -> Callable[[], object]:
        def timed():
            with variant.active(default_model) as (model, _):
                return run(model)
        return timed

    return interleaved_medians({v.name: call(v) for v in variants}, repeats, after_round)


def add_changes_vs_baseline(rows: list[dict], task_keys: tuple[str, ...] = ("class_accuracy", "adherence")) -> None:
    """Against the first row: task scores' change in points, FID's increase, and the latency ratio."""
    base = rows[0]
    for row in rows:
        for key in task_keys:
            if key in row and key in base:
                row[f"{key}_change_points"] = 100 * (row[key] - base[key])
        if "fid_features" in row:
            row["fid_increase_vs_fp"] = row["fid_features"] - base["fid_features"]
        for key in ("latency_ms_per_image", "latency_s"):
            if key in row:
                row["latency_ratio_vs_fp"] = row[key] / base[key]
