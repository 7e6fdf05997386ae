"""Benchmark worlds: a shipped generator with its prompts, seeded sampling runs and judges.

A bench compares variants of one model (quantized, accelerated) against its FP self. Everything
model-specific that a bench needs is here, behind one shape, so every bench runs on every shipped
model: the digits DiT (class labels; digits classifier) and the shapes text-to-image PixArt
(held-out captions; attribute checker and CLIP-score stand-in).

``settings`` is a :class:`SamplingSettings` (the benches' settings extend it; sensitivity_per_class and
sensitivity_steps are read where present). Every run uses fixed seeds, so variants see the same noise
as FP.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from effigy.evaluate.report import SettingsRecord
from effigy.metrics import fid_from_features
from effigy.metrics.image import frechet_distance, gaussian_stats, psnr_per_image, ssim_per_image
from effigy.metrics.stats import paired_bootstrap, paired_mean_difference
from effigy.registry import Registry

Sampler = Callable[[nn.Module], torch.Tensor]


@dataclass
class SamplingSettings(SettingsRecord):
    """What every bench world reads: which model, how many prompts, the sampler, the timing batch."""

    model: str = "dit-digits"
    samples_per_class: int = 10  # digits: images per class; t2i: prompts = 10 x this
    calibration_per_class: int = 1
    steps: int = 20
    guidance_scale: float = 3.0
    seed: int = 0
    batch_size: int = 100
    latency_samples: int = 20
    latency_repeats: int = 3
    prompts: str | None = None  # t2i: "subset:FILE" evaluates on a FlashEval subset instead of 10 x samples_per_class


@dataclass
class BenchSuite:
    name: str
    fp_model: nn.Module
    sample_eval: Sampler  # the evaluation prompts, seed ``settings.seed``
    sample_calibration: Sampler  # other prompts and seeds: for calibrations and searches
    sample_latency: Sampler  # ``latency_samples`` prompts
    sample_sensitivity: Sampler  # a small, short run for mixed-precision sensitivity
    scores: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]]  # images, FP images -> per image
    features: Callable[[torch.Tensor], torch.Tensor]  # images -> the FID feature space [N, D]
    fid: Callable[[torch.Tensor, np.ndarray], float]  # FID of the features of the evaluation images at these indices
    alignment: Callable[[torch.Tensor], torch.Tensor]  # per-image prompt alignment of sensitivity images
    denoiser_call: Callable[[int], dict]  # keyword inputs of one denoiser call on n noisy latents (seeded)
    task_metric: str  # the row key of the task score: class_accuracy or adherence
    fid_features: str
    grid_index: torch.Tensor  # which evaluation images a picture shows
    guidance_batch: bool = True  # each denoiser call holds a [cond; uncond] batch (False: guidance distilled in)
    grid_labels: list[str] | None = None  # what a picture writes above its columns (text-to-image: the prompts)
    breakdown: Callable[[torch.Tensor], dict] | None = None  # evaluation images -> task score per prompt kind
    chance: Callable[[torch.Tensor], dict] | None = None  # evaluation images -> the task score's chance level

    def quality(self, images: torch.Tensor, reference: torch.Tensor | None) -> dict:
        """Means of the per-image scores, and FID on the world's features (no PSNR / SSIM without FP images:
        those keys stay, as None, so every row has the same columns)."""
        means = {key: values.float().mean().item() for key, values in self.scores(images, reference).items()}
        return {**dict.fromkeys(FIDELITY_KEYS), **means,
                "fid_features": self.fid(self.features(images), np.arange(len(images)))}

    def compare(self, images: torch.Tensor, baseline: torch.Tensor, reference: torch.Tensor | None,
                **options) -> dict:
        """Paired differences (``images`` minus ``baseline``, both sampled from the same noise) of every
        score and of FID, with bootstrap intervals over the evaluation images (see :mod:`effigy.metrics.stats`)."""
        ours, theirs = self.scores(images, reference), self.scores(baseline, reference)
        differences = {key: paired_mean_difference(ours[key], theirs[key], **options) for key in ours}
        ours_f, theirs_f = self.features(images), self.features(baseline)
        differences["fid_features"] = paired_bootstrap(lambda idx: self.fid(ours_f, idx),
                                                       lambda idx: self.fid(theirs_f, idx), len(images), **options)
        return {key: d.to_dict() for key, d in differences.items()}


FIDELITY_KEYS = ("psnr_vs_fp", "ssim_vs_fp")
LOWER_IS_BETTER = {"fid_features"}  # of the quality keys; every other score is better higher


def image_quality(images: torch.Tensor, reference: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Per-image PSNR and SSIM against the FP images (none without them)."""
    if reference is None:
        return {}
    return dict(zip(FIDELITY_KEYS, (psnr_per_image(images, reference), ssim_per_image(images, reference))))


def digits_suite(settings: SamplingSettings) -> BenchSuite:
    _refuse_prompt_subsets(settings, "dit-digits")
    from effigy.models.generators import dit_digits
    from effigy.models.zoo import load_zoo_model
    from effigy.worlds.digits import NUM_CLASSES

    model, config = load_zoo_model("dit-digits")
    judge = DigitsJudge.load(config.sample_size, class_labels(settings.samples_per_class))
    classifier, labels = judge.classifier, judge.labels
    sensitivity = class_labels(getattr(settings, "sensitivity_per_class", 2))

    def sample(which: torch.Tensor, seed: int, steps: int | None = None) -> Sampler:
        def run(m: nn.Module) -> torch.Tensor:
            chunks = [dit_digits.sample(m, config, which[i: i + settings.batch_size], steps or settings.steps,
                                        settings.guidance_scale, seed + k)
                      for k, i in enumerate(range(0, len(which), settings.batch_size))]
            return torch.cat(chunks)
        return run

    return BenchSuite(
        name="dit-digits", fp_model=model,
        sample_eval=sample(labels, settings.seed),
        sample_calibration=sample(class_labels(settings.calibration_per_class), settings.seed + 10_000),
        sample_latency=sample(class_labels(max(1, settings.latency_samples // NUM_CLASSES)), settings.seed),
        sample_sensitivity=sample(sensitivity, settings.seed + 20_000, getattr(settings, "sensitivity_steps", None)),
        scores=judge.scores, features=classifier.features, fid=judge.fid,
        alignment=lambda images: classifier(images).softmax(1)[torch.arange(len(sensitivity)), sensitivity],
        denoiser_call=lambda n: {**_noisy_call(model, n, settings.seed), "class_labels": torch.arange(n) % NUM_CLASSES},
        task_metric="class_accuracy", fid_features="digits-classifier penultimate layer (128-d)",
        grid_index=torch.arange(NUM_CLASSES) * settings.samples_per_class,
    )


def _refuse_prompt_subsets(settings: SamplingSettings, model: str) -> None:
    if settings.prompts is not None:
        from effigy.errors import ScoreMatrixError

        raise ScoreMatrixError(f"{model} is class-conditional: --subset FILE applies to the text-to-image "
                               "models (t2i-shapes, t2i-shapes-lcm).")


@dataclass
class DigitsJudge:
    """The digits classifier judging class-conditional samples of ``labels``: accuracy per image, and FID on
    its penultimate features against the whole real digits set (fitted once)."""

    classifier: nn.Module
    labels: torch.Tensor
    real_stats: tuple[np.ndarray, np.ndarray]

    @classmethod
    def load(cls, image_size: int, labels: torch.Tensor) -> DigitsJudge:
        from effigy.models.zoo import load_zoo_model
        from effigy.worlds.digits import load_digits_images

        classifier, _ = load_zoo_model("digits-classifier")
        real_images, _ = load_digits_images(image_size)
        return cls(classifier, labels, gaussian_stats(classifier.features(real_images)))

    def scores(self, images: torch.Tensor, reference: torch.Tensor | None) -> dict[str, torch.Tensor]:
        return {"class_accuracy": (self.classifier(images).argmax(1) == self.labels).float(),
                **image_quality(images, reference)}

    def fid(self, features: torch.Tensor, idx: np.ndarray) -> float:
        return frechet_distance(gaussian_stats(features[idx]), self.real_stats)


VAR_TOP_K = 20  # the digits VAR samples from its 20 likeliest codes (of 256), as VAR samples with top-k


def var_digits_suite(settings: SamplingSettings) -> BenchSuite:
    """The VAR on the digits: the same labels, classifier and FID features as ``dit-digits``; sampling is
    next-scale generation with the shipped tokenizer (``settings.steps`` does not apply)."""
    from effigy.errors import BenchError
    from effigy.models.zoo import load_zoo_model
    from effigy.worlds.digits import NUM_CLASSES

    _refuse_prompt_subsets(settings, "var-digits")
    model, _ = load_zoo_model("var-digits")
    tokenizer, tokenizer_config = load_zoo_model(model.config.tokenizer)
    judge = DigitsJudge.load(tokenizer_config.image_size, class_labels(settings.samples_per_class))
    top_k = getattr(settings, "top_k", VAR_TOP_K)

    def sample(which: torch.Tensor, seed: int) -> Sampler:
        def run(m: nn.Module) -> torch.Tensor:
            return torch.cat([m.generate(tokenizer, which[i: i + settings.batch_size], settings.guidance_scale,
                                         top_k=top_k, seed=seed + k)
                              for k, i in enumerate(range(0, len(which), settings.batch_size))])
        return run

    def no_denoiser(_n: int) -> dict:
        raise BenchError("var-digits is autoregressive: it has no denoiser calls for a diffusion sensitivity search.")

    calibration_labels = class_labels(settings.calibration_per_class)
    calibration = sample(calibration_labels, settings.seed + 10_000)
    return BenchSuite(
        name="var-digits", fp_model=model, sample_eval=sample(judge.labels, settings.seed),
        sample_calibration=calibration,
        sample_latency=sample(class_labels(max(1, settings.latency_samples // NUM_CLASSES)), settings.seed),
        sample_sensitivity=calibration, scores=judge.scores, features=judge.classifier.features, fid=judge.fid,
        alignment=lambda images: judge.classifier(images).softmax(1)[torch.arange(len(images)), calibration_labels],
        denoiser_call=no_denoiser,
        task_metric="class_accuracy", fid_features="digits-classifier penultimate layer (128-d)",
        grid_index=torch.arange(NUM_CLASSES) * settings.samples_per_class,
    )


def _noisy_call(model: nn.Module, n: int, seed: int) -> dict:
    size, channels = model.config.sample_size, model.config.in_channels
    noise = torch.randn(n, channels, size, size, generator=torch.Generator().manual_seed(seed))
    return {"hidden_states": noise, "timestep": torch.full((n,), 500)}


def class_labels(per_class: int) -> torch.Tensor:
    from effigy.worlds.digits import NUM_CLASSES

    return torch.arange(NUM_CLASSES).repeat_interleave(per_class)


def t2i_suite(settings: SamplingSettings, generator: str = "t2i-shapes") -> BenchSuite:
    """Held-out prompts (10 x samples_per_class), cycling single / relation / count; adherence by the
    attribute checker, CLIP-score stand-in, FID on the checker's pooled features. ``generator``: the shipped
    teacher or its few-step student (``t2i-shapes-lcm``), judged alike."""
    from effigy.evaluate import t2i

    suite = t2i.T2ISuite.load(generator)
    scenes = evaluation_scenes(settings)
    sensitivity = t2i.prompt_set(10 * getattr(settings, "sensitivity_per_class", 2), "train", settings.seed + 20_000)
    real = t2i.checker_features(suite.checker, t2i.reference_images(scenes))

    def sample(which, seed: int, steps: int | None = None) -> Sampler:
        def run(m: nn.Module) -> torch.Tensor:
            return t2i.generate(suite.with_transformer(m), which, steps or settings.steps, settings.guidance_scale,
                                seed, batch_size=settings.batch_size)
        return run

    def scores(images: torch.Tensor, reference: torch.Tensor | None) -> dict[str, torch.Tensor]:
        rows = t2i.score_images(suite, scenes, images)
        return {key: torch.tensor([r[key] for r in rows]) for key in ("adherence", "clip_score")} | \
            image_quality(images, reference)

    def alignment(images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([r["clip_score"] for r in t2i.score_images(suite, sensitivity, images)])

    return BenchSuite(
        name=generator, fp_model=suite.transformer, guidance_batch=not suite.few_step,
        sample_eval=sample(scenes, settings.seed),
        sample_calibration=sample(t2i.prompt_set(10 * settings.calibration_per_class, "train", settings.seed + 10_000),
                                  settings.seed + 10_000),
        sample_latency=sample(scenes[: settings.latency_samples], settings.seed),
        sample_sensitivity=sample(sensitivity, settings.seed + 20_000, getattr(settings, "sensitivity_steps", None)),
        scores=scores, features=lambda images: t2i.checker_features(suite.checker, images),
        fid=lambda features, idx: fid_from_features(features[idx], real[idx]),  # renders of the same prompts
        alignment=alignment, task_metric="adherence",
        denoiser_call=lambda n: {**_noisy_call(suite.transformer, n, settings.seed),
                                 **suite.bank.encode([s.caption for s in scenes[:n]])},
        fid_features="shapes-checker pooled features", grid_index=torch.arange(min(10, len(scenes))),
        grid_labels=[s.caption for s in scenes[:10]],
        breakdown=lambda images: {k: v for k, v in t2i.summarize(t2i.score_images(suite, scenes, images)).items()
                                  if k.startswith("adherence_")},
        chance=lambda images: t2i.chance_adherence(suite, scenes, images, t2i.score_images(suite, scenes, images)),
    )


def evaluation_scenes(settings: SamplingSettings) -> list:
    """The held-out prompts a t2i bench evaluates on: 10 x samples_per_class from the seeded world, or the
    prompts of a FlashEval subset (``settings.prompts = "subset:FILE"``)."""
    from effigy.errors import ScoreMatrixError
    from effigy.evaluate import t2i

    if settings.prompts is None:
        return t2i.prompt_set(10 * settings.samples_per_class, "heldout", settings.seed)
    kind, _, path = settings.prompts.partition(":")
    if kind != "subset" or not path:
        raise ScoreMatrixError(f"--prompts {settings.prompts!r}: give subset:FILE, a subset JSON from "
                               "`effigy flasheval search`.")
    from effigy.evaluate.flasheval.apply import read_subset, subset_scenes

    return subset_scenes(read_subset(path))


SUITES: Registry[Callable[[SamplingSettings], BenchSuite]] = Registry("benchmark suite")
SUITES.register("dit-digits", digits_suite)
SUITES.register("t2i-shapes", t2i_suite)
SUITES.register("var-digits", var_digits_suite)
SUITES.register("t2i-shapes-lcm", lambda settings: t2i_suite(settings, "t2i-shapes-lcm"))


def load_suite(name: str, settings: SamplingSettings) -> BenchSuite:
    return SUITES.get(name)(settings)
