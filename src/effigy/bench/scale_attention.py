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
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable

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
    compiled: bool = True  # the compiled rows (fp32 and W8A8; full attention and all together)
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


class AttentionClock:
    """Seconds spent inside the attention modules ``layers`` of ``model`` during a run (pre-hook to hook of each)."""

    def __init__(self, model: nn.Module, layers: list[nn.Module]) -> None:
        layers = {id(layer) for layer in layers}
        self.names = [name for name, module in model.named_modules() if id(module) in layers]
        self.seconds, self._start = 0.0, 0.0

    def start(self, *_args) -> None:
        self._start = time.perf_counter()

    def stop(self, *_args) -> None:
        self.seconds += time.perf_counter() - self._start


def timed(run: Callable[[], object], model: nn.Module, layers: list[nn.Module] | None) -> tuple[float, float | None]:
    """(seconds of ``run()``, seconds of it inside ``layers`` of ``model``); no clock (None) when ``layers`` is None:
    a compiled row, where hooks would change the compiled graph."""
    with ExitStack() as stack:
        clock = None
        if layers is not None:
            clock = AttentionClock(model, layers)
            stack.enter_context(observing(model, clock.names, clock.start))
            stack.enter_context(observing(model, clock.names, clock.stop, "after"))
        start = time.perf_counter()
        run()
        elapsed = time.perf_counter() - start
    return elapsed, None if clock is None else clock.seconds


def medians(seconds: list[float], attention: list[float | None]) -> tuple[float, float | None]:
    """Median run seconds and median attention seconds (None where the attention was not timed)."""
    median = lambda values: sorted(values)[len(values) // 2]
    return median(seconds), None if attention[0] is None else median(attention)


@dataclass
class _Variant:
    """One row: the model it runs (the shared eager model, or its own compiled copy) and what goes on and off it
    around each run."""

    model: nn.Module
    install: Callable[[], object] = lambda: None
    remove: Callable[[], object] = lambda: None
    compiled: bool = False  # no attention clock: hooks inside a compiled graph would change what is timed


def _compiled_variants(model: nn.Module, plan: AttentionPlan) -> dict[str, _Variant]:
    """Full attention and all together, on the fp32 and the W8A8 model under effigy.compile (the scale bench's own
    compiled variants); DiTFastAttn's processors run eagerly between the compiled pieces (a graph break each), and
    its plan goes on once (a new processor each round would recompile)."""
    from effigy.bench.scale import build_variant

    rows = {}
    for label, base in (("fp32 compiled", "fp32 compiled"), ("W8A8 compiled", "vidit-q-w8a8 compiled")):
        rows[f"{label}: full attention"] = _Variant(build_variant(base, model), compiled=True)
        fast = build_variant(base, model)
        apply_ditfastattn(fast, plan)
        rows[f"{label}: DiTFastAttn all together"] = _Variant(fast, compiled=True)
    return rows


def run_attention_section(settings: AttentionScaleSettings, progress: Progress = no_progress) -> dict:
    """Full attention, each DiTFastAttn plan and FirstBlockCache, eager; full attention and all together compiled
    (fp32 and W8A8): whole-run and (eager rows) attention seconds, interleaved; attention FLOP fractions."""
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
    variants = {"full attention": _Variant(model)}
    states = {}
    for name, plan in plans.items():
        variants[f"DiTFastAttn: {name}"] = _Variant(
            model, lambda p=plan, n=name: states.__setitem__(n, apply_ditfastattn(model, p)),
            lambda: remove_ditfastattn(model))
    variants[f"diffusers FirstBlockCache {settings.fbc_threshold:g}"] = _Variant(
        model, lambda: attach_hook(model, fbc), lambda: detach_hook(model, fbc.name))
    if settings.compiled:
        variants |= _compiled_variants(model, plans["all together"])
    seconds = {name: [] for name in variants}
    attention = {name: [] for name in variants}
    advance = progress("attention section (variant x round)", len(variants) * (settings.repeats + 1))
    with torch.no_grad():
        for round_index in range(settings.repeats + 1):  # round 0 warms up (and compiles)
            for name, variant in variants.items():
                elapsed, inside = _timed_run(variant, inputs, timesteps)
                if round_index:
                    seconds[name].append(elapsed)
                    attention[name].append(inside)
                advance()
    return {"settings": settings.to_dict(), "rows": _rows(seconds, attention, states),
            "plans": {name: plan.to_dict()["techniques"] for name, plan in plans.items()}}


def _timed_run(variant: _Variant, inputs: dict, timesteps: list[int]) -> tuple[float, float | None]:
    """(seconds of the denoising run, seconds inside self-attention or None for a compiled row)."""
    variant.install()
    try:
        layers = None if variant.compiled else self_attention_layers(variant.model)
        return timed(lambda: _denoise(variant.model, inputs, timesteps), variant.model, layers)
    finally:
        variant.remove()


def _rows(seconds: dict, attention: dict, states: dict) -> list[dict]:
    full_run, full_attention = medians(seconds["full attention"], attention["full attention"])
    rows = []
    for name in seconds:
        run, attn = medians(seconds[name], attention[name])
        plan = name.removeprefix("DiTFastAttn: ")
        flops = states[plan].flops.fractions() if plan in states else {}
        rows.append({"variant": name, "run_s": round(run, 2), "attention_s": None if attn is None else round(attn, 2),
                     "speedup": round(full_run / run, 3),
                     "attention_speedup": None if attn is None else round(full_attention / attn, 3),
                     "attention_flops_fraction": round(flops["module_fraction"], 4) if flops else None})
    return rows
