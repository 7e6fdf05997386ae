"""The measurement half of the mixed-precision pipeline: record a floating-point run's denoiser calls,
replay them on a partly quantized model, and score the difference per metric.

Metric-decoupled sensitivity (ViDiT-Q, MixDQ) scores each layer group by the quality it harms: a
visual loss (the guided prediction) and an alignment loss (the guidance direction, the part of the
prediction that carries the prompt). Replaying the FP run's calls (teacher-forced on the FP trajectory)
measures the error where the layer acts, so it is smooth in the width and nearly additive across
groups, which is what the integer program assumes. The evaluators here know nothing of recipes or
suites: they take the model, the run and the judges as arguments.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from effigy.core.compare import relative_l2
from effigy.core.hooks import observing

# evaluate(model) -> {"visual": loss vs FP, "alignment": loss vs FP}, larger is worse
Evaluator = Callable[[nn.Module], dict[str, float]]
Run = Callable[[nn.Module], torch.Tensor]  # samples a fixed, seeded batch with the given denoiser


def record_denoiser_calls(model: nn.Module, run: Callable[[nn.Module], object]) -> list[tuple]:
    """(args, kwargs, output sample) of every forward call of ``model`` during ``run(model)``."""
    calls, pending = [], []

    def before(_name, _module, args, kwargs):
        pending.append((args, kwargs))

    def after(_name, _module, _args, _kwargs, output):
        calls.append((*pending.pop(), sample_of(output).detach().clone()))

    with observing(model, [""], before, with_kwargs=True), observing(model, [""], after, "after", with_kwargs=True):
        run(model)
    return calls


def sample_of(output) -> torch.Tensor:
    """A diffusers denoiser's prediction, whether returned as an output object or, as pipelines call it
    (``return_dict=False``), a tuple."""
    return output[0] if isinstance(output, tuple) else output.sample


def cfg_parts(eps: torch.Tensor, guidance_scale: float, uncond_first: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(guided prediction, guidance direction) of a ``[cond; uncond]`` batch (``[uncond; cond]`` with
    ``uncond_first``, as diffusers' text pipelines batch it)."""
    cond, uncond = eps.chunk(2)
    if uncond_first:
        cond, uncond = uncond, cond
    return uncond + guidance_scale * (cond - uncond), cond - uncond


def squared_relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Squared relative L2 error: squared, so that independent groups' errors add up for the ILP."""
    return relative_l2(x, reference) ** 2


def replay_evaluator(calls: list[tuple], guidance_scale: float, weights: list[float], relative: bool,
                     uncond_first: bool = False) -> Evaluator:
    """Weighted sum over the replayed calls of the squared errors of the guided prediction (visual) and of
    the guidance direction (alignment; scaled by the guidance so both are changes of the guided
    prediction), relative to the FP call's own size or absolute.

    Args:
        calls: :func:`record_denoiser_calls` of the FP run.
        guidance_scale: the classifier-free guidance the run samples with.
        weights: one weight per call (``1 / len(calls)`` each, or :func:`propagation_gains`).
        relative: divide each error by the FP call's size (True) or keep it absolute.
        uncond_first: the order of the guidance batch (see :func:`cfg_parts`).
    """
    def error(x: torch.Tensor, reference: torch.Tensor) -> float:
        return squared_relative_error(x, reference) if relative else (x - reference).pow(2).sum().item()

    scale = 1.0 if relative else guidance_scale ** 2

    def evaluate(model: nn.Module) -> dict[str, float]:
        visual = alignment = 0.0
        for weight, (args, kwargs, fp_eps) in zip(weights, calls):
            (guided, direction), (fp_guided, fp_direction) = (
                cfg_parts(sample_of(model(*args, **kwargs)), guidance_scale, uncond_first),
                cfg_parts(fp_eps, guidance_scale, uncond_first))
            visual += weight * error(guided, fp_guided)
            alignment += weight * scale * error(direction, fp_direction)
        return {"visual": visual, "alignment": alignment}

    return evaluate


def sample_level_evaluator(fp_model: nn.Module, run: Run, ssim: Callable, alignment: Callable) -> Evaluator:
    """Scores on the final samples: visual = 1 - SSIM against the FP samples; alignment = mean drop of
    the per-image prompt alignment (``alignment(images)`` per image, higher is better)."""
    reference = run(fp_model)
    aligned = alignment(reference)

    def evaluate(model: nn.Module) -> dict[str, float]:
        images = run(model)
        return {"visual": 1 - ssim(images, reference), "alignment": (aligned - alignment(images)).mean().item()}

    return evaluate


def decoupled_evaluator(fp_model: nn.Module, run: Run, calls: list[tuple], ssim: Callable) -> Evaluator:
    """MixDQ's two metrics, for a denoiser sampled without a classifier-free-guidance batch (guidance baked
    in): content = 1 - SSIM of the final samples against FP; quality = the output's noise-to-signal ratio
    (10^(-SQNR / 10)) on the FP run's replayed calls, averaged: a power, so that groups' errors add up."""
    reference = run(fp_model)

    def evaluate(model: nn.Module) -> dict[str, float]:
        quality = sum(squared_relative_error(sample_of(model(*args, **kwargs)), fp_out)
                      for args, kwargs, fp_out in calls) / len(calls)
        return {"content": 1 - ssim(run(model), reference), "quality": quality}

    return evaluate


def propagation_gains(fp_model: nn.Module, run: Run, calls: list[tuple], guidance_scale: float, size: float = 0.05,
                      seed: int = 0, uncond_first: bool = False) -> list[float]:
    """For each denoiser call of the FP run: |change of the final samples|^2 / |kick|^2 when only that
    call's guided prediction is kicked by small seeded noise (``size`` x its std), divided by
    |final samples|^2, so that a gain-weighted sum of per-call squared errors estimates the relative
    squared change of the final samples. One extra FP run per call.
    """
    reference = run(fp_model)
    generator = torch.Generator().manual_seed(seed)
    gains = []
    for index, (_args, _kwargs, fp_eps) in enumerate(calls):
        guided = cfg_parts(fp_eps, guidance_scale, uncond_first)[0]
        kick = size * guided.std() * torch.randn(guided.shape, generator=generator)
        with kicked_call(fp_model, index, torch.cat([kick, kick])):  # both halves: guided moves by kick
            kicked = run(fp_model)
        gains.append((kicked - reference).pow(2).sum().item() / kick.pow(2).sum().item())
    size_of_final = reference.pow(2).sum().item()
    return [gain / size_of_final for gain in gains]


@contextmanager
def kicked_call(model: nn.Module, index: int, kick: torch.Tensor):
    """Adds ``kick`` to the output of the model's ``index``-th forward call inside the block."""
    count = [0]

    def add(_name, _module, _args, output):
        if count[0] == index:
            if isinstance(output, tuple):  # a pipeline's call (return_dict=False)
                return (output[0] + kick, *output[1:])
            output.sample = output.sample + kick
        count[0] += 1
        return output

    with observing(model, [""], add, "after"):
        yield


def normalise_by_metric(raw: dict[str, dict[int, float]], metric: dict[str, str]) -> dict[str, dict[int, float]]:
    """Each metric's scores divided by that metric's mean absolute score at each group's lowest width, so a
    visual loss and an alignment loss weigh alike in one objective."""
    scale = {}
    for name in set(metric.values()):
        lows = [abs(raw[g][min(raw[g])]) for g in raw if metric[g] == name]
        scale[name] = (sum(lows) / len(lows)) or 1.0
    return {g: {b: v / scale[metric[g]] for b, v in row.items()} for g, row in raw.items()}
