"""DiTFastAttn's greedy calibration search.

For each denoising step (step 0 is always full attention) and each block in order, the search tries
the techniques from most to least compressive and keeps the first one whose error on the
transformer's output at that step stays under ``threshold * (block + 1) / num_blocks``; choices made
for earlier blocks stay in place while later blocks are tried. The reference is the same step with
full attention everywhere, on the same input, so errors do not compound into the criterion.

It runs inside any sampler: a pre-hook and a forward hook on the transformer do the trial forwards
each time the sampler calls it, and hand the sampler the output of the chosen row.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from effigy.attention.plan import (
    CFG_SHARED,
    FULL,
    FULL_CFG,
    SHARE_STEP,
    TECHNIQUES,
    WINDOW_RESIDUAL,
    WINDOW_RESIDUAL_CFG,
    WINDOWED,
    AttentionPlan,
    PlanError,
    model_signature,
    self_attention_layers,
)
from effigy.attention.processor import (
    DiTFastAttnHook,
    FastAttnState,
    core_flops,
    projection_flops,
    timestep_of,
)
from effigy.attention.window import band_pairs, half_window_for
from effigy.core.compare import cosine_distance, relative_l1, relative_l2
from effigy.core.hooks import observing
from effigy.nn.hooks import attach_hook, detach_hook
from effigy.registry import Registry

ErrorMetric = Callable[[torch.Tensor, torch.Tensor], float]
METRICS: Registry[ErrorMetric] = Registry("error metric", PlanError)
for _name, _metric in (("rel_l1", relative_l1), ("rel_l2", relative_l2), ("cosine", cosine_distance)):
    METRICS.register(_name, _metric)


def error_metric(name: str) -> ErrorMetric:
    return METRICS.get(name)


def candidates_by_cost(attn: nn.Module, tokens: int, window_fraction: float, cfg: bool) -> list[str]:
    """Techniques other than full, cheapest first by the FLOPs they compute per image in this layer
    (projections + attention core). At DiT-XL sizes the attention core dominates and this is the
    published order; at a few dozen tokens the projections dominate, so sharing the conditional half
    (half of everything) can be cheaper than a window (all projections, part of the core)."""
    projections = projection_flops(attn, tokens)
    window = core_flops(attn, band_pairs(tokens, half_window_for(tokens, window_fraction)))
    full = core_flops(attn, tokens * tokens)
    flops = {SHARE_STEP: 0.0, WINDOW_RESIDUAL_CFG: (projections + window) / 2, WINDOW_RESIDUAL: projections + window,
             FULL_CFG: (projections + full) / 2}
    usable = [t for t in TECHNIQUES if t != FULL and (cfg or t not in CFG_SHARED)]
    return sorted(usable, key=lambda t: (flops[t], TECHNIQUES.index(t)))


def _sample_of(output) -> torch.Tensor:
    return output.sample if hasattr(output, "sample") else output[0]


class _GreedySearch:
    """Holds the hooks' shared state during one calibration run."""

    def __init__(self, transformer: nn.Module, state: FastAttnState, threshold: float, metric: ErrorMetric,
                 candidates: list[str], progress: Callable[[], None]) -> None:
        self.transformer, self.state, self.threshold, self.metric = transformer, state, threshold, metric
        self.candidates, self.progress = candidates, progress
        self.num_blocks = len(state.caches)
        self.rows: list[list[str]] = []
        self.errors: list[list[float]] = []
        self.timesteps: list[int] = []
        self.busy = False

    def before(self, _name: str, _module, args, kwargs) -> None:
        if self.busy:
            return
        self.state.begin_call(timestep_of(args, kwargs))
        if self.state.step != len(self.rows):
            raise PlanError("calibration must be one sampling run from its first step")
        self.timesteps.append(int(round(self.state.last_timestep)))
        self.state.row, self.state.writing = [FULL] * self.num_blocks, False  # the reference forward

    def after(self, _name: str, _module, args, kwargs, output):
        if self.busy:
            return None
        self.busy = True
        try:
            row, errors = self._choose_row(args, kwargs, _sample_of(output))
            self.state.row, self.state.writing = row, True
            final = self.transformer(*args, **kwargs)
        finally:
            self.busy = False
        self.rows.append(row)
        self.errors.append(errors)
        self.progress()
        return final

    def _choose_row(self, args, kwargs, reference: torch.Tensor) -> tuple[list[str], list[float]]:
        row = [FULL] * self.num_blocks
        errors = [0.0] * self.num_blocks
        if self.state.step == 0:
            return row, errors
        for block in range(self.num_blocks):
            bound = self.threshold * (block + 1) / self.num_blocks
            for technique in self._usable(block):
                row[block] = technique
                self.state.row = row
                error = self.metric(_sample_of(self.transformer(*args, **kwargs)), reference)
                if error <= bound:
                    errors[block] = error
                    break
            else:
                row[block] = FULL
        return row, errors

    def _usable(self, block: int) -> list[str]:
        cache = self.state.caches[block]
        return [t for t in self.candidates
                if not (t == SHARE_STEP and cache.output is None) and not (t in WINDOWED and cache.residual is None)]


@torch.no_grad()
def calibrate_plan(
    transformer: nn.Module,
    run_sampling: Callable[[], object],
    threshold: float,
    window_fraction: float = 0.125,
    metric: str = "rel_l1",
    cfg: bool = True,
    progress: Callable[[], None] | None = None,
) -> AttentionPlan:
    """DiTFastAttn's calibration (https://arxiv.org/abs/2406.08552): search a plan during one sampling run.

    Args:
        transformer: a diffusers DiT / PixArt transformer.
        run_sampling: samples once with ``transformer`` (one call per step, the ``[cond; uncond]`` batch
            when ``cfg``), e.g. on calibration prompts.
        threshold: the bound on each step's relative output error (scaled by block depth).
        window_fraction: window attention's band as a fraction of the token count.
        metric: ``rel_l1``, ``rel_l2`` or ``cosine``.
        cfg: try CFG sharing (the conditional half's attention reused for the unconditional half).
        progress: called once per step.
    Returns:
        The plan (JSON-serialisable; ``plan.save(path)``, ``AttentionPlan.load(path)``).

    >>> plan = calibrate_plan(pipe.transformer, lambda: pipe(prompts), threshold=0.1)  # doctest: +SKIP
    >>> apply_ditfastattn(pipe, plan)  # doctest: +SKIP
    """
    if threshold < 0:
        raise PlanError(f"threshold must be >= 0, got {threshold}")
    signature = model_signature(transformer)
    num_blocks = signature["num_blocks"]
    state = FastAttnState(num_blocks, window_fraction, plan=None, cfg=cfg)
    state.searching = True
    candidates = candidates_by_cost(self_attention_layers(transformer)[0], signature["num_tokens"], window_fraction, cfg)
    search = _GreedySearch(transformer, state, threshold, error_metric(metric), candidates, progress or (lambda: None))
    attach_hook(transformer, DiTFastAttnHook(state, step_hook=False))  # the search's own pre-hook advances the steps
    try:
        with observing(transformer, [""], search.before, with_kwargs=True), \
                observing(transformer, [""], search.after, "after", with_kwargs=True):
            run_sampling()
    finally:
        detach_hook(transformer, DiTFastAttnHook.name)
    if not search.rows:
        raise PlanError("the sampling run never called the transformer; nothing to calibrate")
    return AttentionPlan(search.rows, search.timesteps, window_fraction, threshold, metric, signature, cfg,
                         search.errors)
