"""The model variants a FlashEval matrix ranks: what effigy's compression loop chooses between.

A variant is data (:class:`VariantSpec`): which shipped generator, which sampler at how many steps and
what guidance, and at most one change to the model (a quantization recipe, a DiTFastAttn threshold,
seeded weight noise). :class:`VariantBuilder` turns a spec into a sampler of images, building each
model once per process.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.errors import ScoreMatrixError
from effigy.evaluate import t2i
from effigy.models.generators.diffusion import SAMPLERS
from effigy.serialize import config_from_dict, config_to_dict

log = logging.getLogger(__name__)
GENERATORS = ("t2i-shapes", "t2i-shapes-lcm")
CALIBRATION_PROMPTS = 20


@dataclass(frozen=True)
class VariantSpec:
    """One row of a score matrix.

    Attributes:
        name: the row's name.
        generator: ``t2i-shapes`` (the teacher, CFG) or ``t2i-shapes-lcm`` (the few-step student).
        sampler: one of ``diffusion.SAMPLERS`` (the student always samples with LCMScheduler).
        steps, guidance: the sampling run (the student's guidance is distilled in).
        recipe: a quantization recipe; a mixed-precision one needs ``allocation``.
        allocation: the ``*_allocation.json`` of a mixed-precision recipe, relative to the working directory.
        fastattn: a DiTFastAttn threshold (plan calibrated on training prompts at these steps).
        weight_noise: seeded Gaussian noise on the quantizable linears, relative to each channel's RMS.
    """

    FORMAT = "effigy-flasheval-variant/1"
    name: str
    generator: str = "t2i-shapes"
    sampler: str = "dpm-solver++"
    steps: int = 20
    guidance: float = 3.0
    recipe: str | None = None
    allocation: str | None = None
    fastattn: float | None = None
    weight_noise: float | None = None

    def __post_init__(self) -> None:
        if self.generator not in GENERATORS:
            raise ScoreMatrixError(f"variant {self.name!r}: generator {self.generator!r} is not one of "
                                   f"{', '.join(GENERATORS)}.")
        if self.sampler not in SAMPLERS:
            raise ScoreMatrixError(f"variant {self.name!r}: sampler {self.sampler!r} is not one of {', '.join(SAMPLERS)}.")
        changes = [c for c in (self.recipe, self.fastattn, self.weight_noise) if c is not None]
        if len(changes) > 1:
            raise ScoreMatrixError(f"variant {self.name!r} changes the model {len(changes)} ways; give one of recipe, "
                                   "fastattn or weight_noise per variant.")

    def to_dict(self) -> dict:
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VariantSpec":
        return config_from_dict(cls, data, ScoreMatrixError)

    @property
    def model_key(self) -> tuple:
        """What the built model depends on (sampling settings aside, except where calibration reads them)."""
        calibrated_at = self.steps if self.fastattn is not None else None
        return (self.generator, self.recipe, self.allocation, self.fastattn, calibrated_at, self.weight_noise)


def default_variants() -> list[VariantSpec]:
    """Variants of the shapes teacher and its student: samplers x steps (2 to 50), guidance (1 to 7), the
    quantization recipes (uniform and mixed precision), DiTFastAttn thresholds, weight noise, the few-step
    student and MixDQ on it. Steps are kept low where the change is the point (guidance, noise, recipes):
    the matrix costs what its denoiser calls cost, about 2 s per step per 100 prompts on one CPU thread."""
    v = VariantSpec
    specs = [v(f"dpm-solver++ {s} steps", steps=s) for s in (2, 3, 4, 6, 8, 12, 50)]
    specs += [v(f"ddim {s} steps", sampler="ddim", steps=s) for s in (2, 4, 8, 16)]
    specs += [v(f"unipc {s} steps", sampler="unipc", steps=s) for s in (3, 5, 10)]
    specs += [v(f"euler {s} steps", sampler="euler", steps=s) for s in (2, 4, 8, 16)]
    specs += [v(f"guidance {g:g}, 6 steps", steps=6, guidance=g) for g in (1.0, 2.0, 4.0, 5.0, 7.0)]
    quant_allocation = "benchmarks/results/quant/t2i-shapes/quant_t2i_shapes_allocation.json"
    uniform = ("vidit-q-w8a8", "naive-w8a8", "rtn-w4a8", "vidit-q-w4a8", "rtn-w4a16", "vidit-q-w4a16")
    specs += [v(f"{r}, 4 steps", steps=4, recipe=r) for r in uniform]
    specs += [v("vidit-q-w4a8-mp, 4 steps", steps=4, recipe="vidit-q-w4a8-mp", allocation=quant_allocation)]
    specs += [v(f"ditfastattn t={t:g}, 10 steps", steps=10, fastattn=t) for t in (0.05, 0.1, 0.2)]
    specs += [v(f"weight noise {n:g}, 6 steps", steps=6, weight_noise=n) for n in (0.05, 0.1, 0.2, 0.3)]
    specs += [v(f"lcm student {s} steps", generator="t2i-shapes-lcm", steps=s) for s in (1, 2, 4)]
    mixdq_allocation = "benchmarks/results/mixdq/t2i-shapes-lcm/mixdq_t2i_shapes_lcm_allocation.json"
    specs += [v("mixdq-w4a8 student 4 steps", generator="t2i-shapes-lcm", steps=4, recipe="mixdq-w4a8",
                allocation=mixdq_allocation)]
    return specs


class VariantBuilder:
    """Builds each variant's model once per process and samples images with it."""

    def __init__(self) -> None:
        self._suites: dict[str, t2i.T2ISuite] = {}
        self._models: dict[tuple, nn.Module] = {}

    def suite(self, generator: str) -> t2i.T2ISuite:
        """The generator with its judges; the student shares the teacher's judges and caption cache."""
        if generator not in self._suites:
            if not self._suites:
                self._suites[generator] = t2i.T2ISuite.load(generator)
            else:
                self._suites[generator] = next(iter(self._suites.values())).with_generator(generator)
        return self._suites[generator]

    def sampler_for(self, spec: VariantSpec) -> Callable[[list, int], torch.Tensor]:
        """``run(scenes, seed) -> images`` for the variant."""
        suite = self.suite(spec.generator).with_transformer(self.model(spec))

        def run(scenes: list, seed: int) -> torch.Tensor:
            return t2i.generate(suite, scenes, spec.steps, spec.guidance, seed, sampler=spec.sampler)
        return run

    def model(self, spec: VariantSpec) -> nn.Module:
        key = spec.model_key
        if key not in self._models:
            self._models[key] = self._build(spec)
        return self._models[key]

    @torch.no_grad()
    def _build(self, spec: VariantSpec) -> nn.Module:
        suite = self.suite(spec.generator)
        if spec.weight_noise is not None:
            return t2i.with_weight_noise(suite.transformer, spec.weight_noise, seed=0)
        if spec.recipe is not None:
            return self._quantized(suite, spec)
        if spec.fastattn is not None:
            return self._fastattn(suite, spec)
        return suite.transformer

    def _calibration(self, suite: t2i.T2ISuite, spec: VariantSpec) -> Callable[[nn.Module], object]:
        scenes = t2i.prompt_set(CALIBRATION_PROMPTS, "train", seed=10_000)
        return lambda m: t2i.generate(suite.with_transformer(m), scenes, spec.steps, spec.guidance, 10_000,
                                      sampler=spec.sampler)

    def _quantized(self, suite: t2i.T2ISuite, spec: VariantSpec) -> nn.Module:
        from effigy.nn.quantize import quantize
        from effigy.recipes import get_recipe
        from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES, config_from_allocation_file

        if spec.recipe in MIXED_PRECISION_RECIPES:
            if spec.allocation is None or not Path(spec.allocation).is_file():
                raise ScoreMatrixError(f"variant {spec.name!r}: mixed-precision recipe {spec.recipe} needs its "
                                       f"allocation file, {spec.allocation!r} is not one (run from the repository root).")
            config = config_from_allocation_file(suite.transformer, spec.recipe, spec.allocation)
        else:
            config = get_recipe(spec.recipe)
        log.info("variant %s: quantizing with %s", spec.name, config.name)
        return quantize(copy.deepcopy(suite.transformer), config, self._calibration(suite, spec))

    def _fastattn(self, suite: t2i.T2ISuite, spec: VariantSpec) -> nn.Module:
        from effigy.attention import apply_ditfastattn, calibrate_plan

        model = copy.deepcopy(suite.transformer)
        calibrate = self._calibration(suite, spec)
        plan = calibrate_plan(model, lambda: calibrate(model), spec.fastattn, cfg=True)
        apply_ditfastattn(model, plan)
        return model
