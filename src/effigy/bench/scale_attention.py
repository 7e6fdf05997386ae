"""The attention section of ``effigy bench scale``: DiTFastAttn with fixed plans on a random transformer of a
published model's width at thousands of tokens, against full attention and diffusers' FirstBlockCache (issue 42).

A short denoising run (``steps`` calls, each a CFG batch of 2; the latents move with the model's own output, so a
cache that watches the inputs sees them change) is timed whole and inside the self-attention modules (their
forward, projections included), variants interleaved. The model has ``blocks`` of the published blocks (every
block runs the same plan, so the ratios are the whole model's up to its embedders and final layer; the tables say
how many blocks ran). Random weights: speed only, every table says so.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from effigy.attention import AttentionPlan, apply_ditfastattn, remove_ditfastattn
from effigy.attention.plan import (
    FULL,
    FULL_CFG,
    SHARE_STEP,
    WINDOW_RESIDUAL,
    WINDOW_RESIDUAL_CFG,
    model_signature,
    self_attention_layers,
)
from effigy.core.hooks import observing
from effigy.errors import BenchError
from effigy.evaluate.measure import Progress, no_progress
from effigy.evaluate.report import SettingsRecord


@dataclass
class AttentionScaleSettings(SettingsRecord):
    architecture: str = "pixart-alpha"
    tokens: int = 4096
    blocks: int = 2  # copies of the published block that run (the published depth is in ARCHITECTURES)
    steps: int = 8
    window_fraction: float = 0.125
    repeats: int = 1  # timed rounds after the warm-up round (which also compiles the flex kernel)
    fbc_threshold: float = 0.05  # diffusers' FirstBlockCacheConfig default
    seed: int = 0


def fixed_plans(steps: int, blocks: int) -> dict[str, list[list[str]]]:
    """The techniques per step and block of each DiTFastAttn row: the first step always full (the residual and
    the shared outputs come from it), then nothing skipped (what DiTFastAttn's processors cost by themselves),
    window 1/8 alone, step sharing on every other step, CFG sharing alone, and all three together (window +
    residual with CFG sharing, alternating with step sharing)."""
    def rows(later) -> list[list[str]]:
        return [[FULL] * blocks] + [[later(step)] * blocks for step in range(1, steps)]

    return {"nothing skipped (overhead)": rows(lambda step: FULL),
            "window 1/8": rows(lambda step: WINDOW_RESIDUAL),
            "step sharing, half the steps": rows(lambda step: SHARE_STEP if step % 2 == 0 else FULL),
            "CFG sharing": rows(lambda step: FULL_CFG),
            "all together": rows(lambda step: SHARE_STEP if step % 2 == 0 else WINDOW_RESIDUAL_CFG)}


def _timesteps(steps: int) -> list[int]:
    return [int(999 - i * 1000 / steps) for i in range(steps)]


def _denoise(model: nn.Module, inputs: dict, timesteps: list[int]) -> None:
    latents = inputs["hidden_states"]
    for t in timesteps:
        out = model(**{**inputs, "hidden_states": latents, "timestep": torch.full((latents.shape[0],), t)}).sample
        latents = latents - 0.05 * out[:, : latents.shape[1]]


class _AttentionClock:
    """Seconds spent inside the self-attention modules during a run (pre-hook to hook of each)."""

    def __init__(self, model: nn.Module) -> None:
        layers = {id(layer) for layer in self_attention_layers(model)}
        self.names = [name for name, module in model.named_modules() if id(module) in layers]
        self.seconds, self._start = 0.0, 0.0

    def start(self, *_args) -> None:
        self._start = time.perf_counter()

    def stop(self, *_args) -> None:
        self.seconds += time.perf_counter() - self._start


def run_attention_section(settings: AttentionScaleSettings, progress: Progress = no_progress) -> dict:
    """Full attention, each DiTFastAttn plan and FirstBlockCache: whole-run and attention seconds, interleaved;
    attention FLOP fractions of the plans."""
    from effigy.bench.peers.diffusers_caches import DiffusersCache
    from effigy.bench.scale import ARCHITECTURES, build_dit, dit_inputs
    from effigy.nn.hooks import attach_hook, detach_hook

    if settings.architecture not in ARCHITECTURES:
        raise BenchError(f"unknown architecture {settings.architecture!r}; choose one of {', '.join(ARCHITECTURES)}")
    model = build_dit(settings.architecture, settings.tokens, settings.seed, num_layers=settings.blocks)
    inputs = dit_inputs(model, 2, settings.seed)
    timesteps = _timesteps(settings.steps)
    plans = {name: AttentionPlan(rows, timesteps, settings.window_fraction, 0.0, "rel_l1", model_signature(model), True)
             for name, rows in fixed_plans(settings.steps, settings.blocks).items()}
    fbc = DiffusersCache("fbc", settings.fbc_threshold, settings.steps)
    variants = {"full attention": (lambda: None, lambda: None)}
    states = {}
    for name, plan in plans.items():
        variants[f"DiTFastAttn: {name}"] = (lambda p=plan, n=name: states.__setitem__(n, apply_ditfastattn(model, p)),
                                            lambda: remove_ditfastattn(model))
    variants[f"diffusers FirstBlockCache {settings.fbc_threshold:g}"] = (lambda: attach_hook(model, fbc),
                                                                          lambda: detach_hook(model, fbc.name))
    seconds = {name: [] for name in variants}
    attention = {name: [] for name in variants}
    advance = progress("attention section (variant x round)", len(variants) * (settings.repeats + 1))
    with torch.no_grad():
        for round_index in range(settings.repeats + 1):  # round 0 warms up (and compiles the flex kernel)
            for name, (install, remove) in variants.items():
                clock = _AttentionClock(model)
                install()
                try:
                    with observing(model, clock.names, clock.start), observing(model, clock.names, clock.stop, "after"):
                        start = time.perf_counter()
                        _denoise(model, inputs, timesteps)
                        elapsed = time.perf_counter() - start
                finally:
                    remove()
                if round_index:
                    seconds[name].append(elapsed)
                    attention[name].append(clock.seconds)
                advance()
    return {"settings": settings.to_dict(), "rows": _rows(seconds, attention, states),
            "plans": {name: plan.to_dict()["techniques"] for name, plan in plans.items()}}


def _rows(seconds: dict, attention: dict, states: dict) -> list[dict]:
    median = lambda values: sorted(values)[len(values) // 2]
    full_run, full_attention = median(seconds["full attention"]), median(attention["full attention"])
    rows = []
    for name in seconds:
        run, attn = median(seconds[name]), median(attention[name])
        plan = name.removeprefix("DiTFastAttn: ")
        flops = states[plan].flops.fractions() if plan in states else {}
        rows.append({"variant": name, "run_s": round(run, 2), "attention_s": round(attn, 2),
                     "speedup": round(full_run / run, 3), "attention_speedup": round(full_attention / attn, 3),
                     "attention_flops_fraction": round(flops["module_fraction"], 4) if flops else None})
    return rows
