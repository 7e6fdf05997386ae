"""A DiTFastAttn plan: which attention technique each (denoising step, transformer block) uses.

The plan is data (JSON), made once by the calibrated search and reloaded without recalibration. It
records the model it was made for and the sampler's timesteps, so a plan cannot be silently applied
to another model or another number of steps.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from torch import nn

from effigy.errors import PlanError
from effigy.serialize import config_from_dict, config_to_dict

SHARE_STEP = "share_step"  # reuse this layer's attention output from the previous step
WINDOW_RESIDUAL_CFG = "window_residual_cfg"  # WA-RS on the conditional half, shared with the other half
WINDOW_RESIDUAL = "window_residual"  # window attention plus the residual cached at the last full step
FULL_CFG = "full_cfg"  # full attention on the conditional half, shared with the unconditional half
FULL = "full"
TECHNIQUES = (SHARE_STEP, WINDOW_RESIDUAL_CFG, WINDOW_RESIDUAL, FULL_CFG, FULL)
WINDOWED = (WINDOW_RESIDUAL, WINDOW_RESIDUAL_CFG)
CFG_SHARED = (WINDOW_RESIDUAL_CFG, FULL_CFG)
PLAN_FORMAT = "effigy-ditfastattn-plan/1"


def self_attention_layers(transformer: nn.Module) -> list[nn.Module]:
    """The self-attention module (``attn1``) of every transformer block, in order."""
    blocks = getattr(transformer, "transformer_blocks", None)
    if blocks is None or not all(hasattr(b, "attn1") for b in blocks):
        raise PlanError(f"{type(transformer).__name__} has no `transformer_blocks` with `attn1` self-attention; "
                        "DiTFastAttn supports diffusers DiT / PixArt style transformers")
    return [block.attn1 for block in blocks]


def model_signature(transformer: nn.Module) -> dict:
    """What a plan must match: the class (of the model inside a compiled one), the block count and the token count
    per image."""
    from effigy.nn.compile import CompiledModel

    config = transformer.config
    size = config.sample_size
    tokens = (size // config.patch_size) ** 2 if config.patch_size else size * size
    first = self_attention_layers(transformer)[0]
    return {"class": type(CompiledModel.uncompiled(transformer)).__name__, "num_blocks": len(self_attention_layers(transformer)),
            "num_tokens": int(tokens), "inner_dim": int(first.inner_dim), "heads": int(first.heads)}


@dataclass
class AttentionPlan:
    """``techniques[step][block]`` for a sampling run with the given ``timesteps``."""

    FORMAT: ClassVar[str] = PLAN_FORMAT

    techniques: list[list[str]]
    timesteps: list[int]
    window_fraction: float
    threshold: float
    metric: str
    model: dict
    cfg: bool = True
    errors: list[list[float]] = field(default_factory=list)  # search error per (step, block), for reports

    def __post_init__(self) -> None:
        if len(self.techniques) != len(self.timesteps):
            raise PlanError(f"plan has {len(self.techniques)} step rows but {len(self.timesteps)} timesteps")
        blocks = {len(row) for row in self.techniques}
        if len(blocks) > 1:
            raise PlanError(f"plan rows have different block counts: {sorted(blocks)}")
        unknown = {t for row in self.techniques for t in row} - set(TECHNIQUES)
        if unknown:
            raise PlanError(f"unknown technique(s) {sorted(unknown)}; known: {list(TECHNIQUES)}")
        if self.techniques and any(t != FULL for t in self.techniques[0]):
            raise PlanError("step 0 must use full attention in every block (nothing is cached before it)")
        if not self.cfg and any(t in CFG_SHARED for row in self.techniques for t in row):
            raise PlanError("plan uses CFG sharing but was made for sampling without classifier-free guidance")

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def technique_counts(self) -> dict[str, int]:
        counts = Counter(t for row in self.techniques for t in row)
        return {t: counts.get(t, 0) for t in TECHNIQUES}

    def check_model(self, transformer: nn.Module) -> None:
        found = model_signature(transformer)
        if found != self.model:
            raise PlanError(f"this plan was calibrated for {self.model}, not for this model {found}; "
                            "run the calibration (effigy accelerate) on this model")
        rows = {len(row) for row in self.techniques}
        if rows and rows != {found["num_blocks"]}:
            raise PlanError(f"the plan has {rows.pop()} block(s) per step, the model {found['num_blocks']}; the "
                            "file is damaged: run the calibration (effigy accelerate) again")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "AttentionPlan":
        return config_from_dict(cls, data, PlanError)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "AttentionPlan":
        from effigy.serialize import read_json_file

        return cls.from_dict(read_json_file(path, "a plan written by calibrate_plan / effigy accelerate", PlanError))
