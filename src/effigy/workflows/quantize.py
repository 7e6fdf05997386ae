"""Which float model a CLI name means, how to calibrate it, and quantize-then-save (``effigy quantize``).

A model is a zoo name (calibrated on its suite's own calibration prompts), a diffusers pipeline folder
(its transformer is quantized, calibrated by running the pipeline on ``--prompts`` or on a built-in set
of everyday captions; class-conditional pipelines on their class labels), or a diffusers transformer folder
(class-conditional ones calibrate on their labels; a text-conditioned transformer alone cannot be
calibrated, since the text encoder lives in the pipeline).
"""
from __future__ import annotations

import inspect
import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.checkpoint.files import replaced_atomically
from effigy.errors import QuantizationError
from effigy.evaluate.measure import Progress, no_progress
from effigy.models.pretrained import is_pipeline_folder, load_pipeline, load_pretrained
from effigy.models.zoo import ZOO
from effigy.nn import QuantConfig
from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES
from effigy.workflows import mixed_precision
from effigy.workflows.mixed_precision import SearchSettings

log = logging.getLogger(__name__)

CalibrationLoop = Callable[[nn.Module], None]
EVERYDAY_CAPTIONS = (
    "a photo of a cat sitting on a sofa", "a red bicycle leaning against a brick wall", "a bowl of fruit on a table",
    "a mountain lake at sunrise", "a city street at night with neon signs", "a dog running on the beach",
    "a cup of coffee next to a laptop", "an old wooden boat on a river", "a field of sunflowers under a blue sky",
    "a plate of pasta with tomato sauce", "a snowy forest path", "a child flying a kite in a park",
    "a modern kitchen with white cabinets", "a close-up of a butterfly on a flower", "a train crossing a bridge",
    "a portrait of an old man with a beard",
)


@dataclass
class QuantizationSource:
    """The float denoiser to quantize and, where effigy can sample for it, its calibration loop."""

    model: nn.Module
    calibrate: CalibrationLoop | None
    why_not: str = ""  # when ``calibrate`` is None: what the user can do instead
    pipeline: object = None


def quantization_source(name_or_path: str, prompts: list[str] | None = None, steps: int = 20) -> QuantizationSource:
    """Resolve a zoo name, a pipeline folder or a transformer folder (see the module docstring).

    Args:
        name_or_path: what ``--model`` names.
        prompts: calibration prompts for a text-to-image pipeline (default: :data:`EVERYDAY_CAPTIONS`).
        steps: sampling steps of each calibration run.
    """
    if name_or_path in ZOO.names("generator"):
        from effigy.evaluate.suites import SamplingSettings, load_suite

        suite = load_suite(name_or_path, SamplingSettings(model=name_or_path, calibration_per_class=2, steps=steps))
        return QuantizationSource(suite.fp_model, suite.sample_calibration)
    if is_pipeline_folder(name_or_path):
        pipe = load_pipeline(name_or_path)
        return QuantizationSource(pipe.transformer, pipeline_calibration_loop(pipe, prompts, steps), pipeline=pipe)
    model = load_pretrained(name_or_path)
    if "class_labels" not in inspect.signature(model.forward).parameters:
        return QuantizationSource(model, None, f"{name_or_path!r} is a text-conditioned transformer without its "
                                  "pipeline, so effigy cannot sample calibration data for it; pass the pipeline folder "
                                  "(with model_index.json), use a recipe without calibration such as vidit-q-w8a8 or "
                                  "rtn-w4a8, or call effigy.quantize with your own calib_loop.")
    return QuantizationSource(model, class_label_calibration_loop(model, steps))


def class_label_calibration_loop(model: nn.Module, steps: int, per_class: int = 2) -> CalibrationLoop:
    """Sampling runs of a class-conditional DiT on its first ten classes (``per_class`` images each)."""
    from effigy.models.generators import dit_digits

    classes = min(model.config.num_embeds_ada_norm, 10)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return lambda transformer: dit_digits.sample(transformer, dit_digits.DiTDigitsConfig(), labels, steps, seed=10_000)


def pipeline_runs(pipe, prompts: list[str] | None, batch: int = 4) -> list[dict]:
    """The pipeline's inputs in batches: text pipelines on ``prompts`` (or :data:`EVERYDAY_CAPTIONS`),
    class-conditional ones (``DiTPipeline``) on their labels."""
    if is_class_conditional(pipe):
        labels = class_ids(pipe, prompts) if prompts else list(range(8))
        return [dict(class_labels=labels[i: i + batch]) for i in range(0, len(labels), batch)]
    texts = list(prompts or EVERYDAY_CAPTIONS)
    return [dict(prompt=texts[i: i + batch]) for i in range(0, len(texts), batch)]


def is_class_conditional(pipe) -> bool:
    return "class_labels" in inspect.signature(pipe.__call__).parameters


def pipeline_sampler(pipe, prompts: list[str] | None, steps: int, seed: int = 10_000,
                     guidance_scale: float | None = None) -> Callable[[nn.Module], torch.Tensor]:
    """A seeded run of the pipeline itself with the given transformer swapped in: ``run(transformer)`` returns
    the images in [-1, 1] (the range effigy's image metrics read).

    Args:
        pipe: a loaded diffusers pipeline.
        prompts: its prompts (class ids or label names for a class-conditional pipeline).
        steps: sampling steps.
        seed: the first batch's seed (each batch the next).
        guidance_scale: classifier-free guidance (default: the pipeline's own).
    """
    pipe.set_progress_bar_config(disable=True)
    accepted = inspect.signature(pipe.__call__).parameters
    extra = {k: v for k, v in (("use_resolution_binning", False), ("clean_caption", False)) if k in accepted}
    if guidance_scale is not None:
        extra["guidance_scale"] = guidance_scale
    runs = pipeline_runs(pipe, prompts)

    def run(transformer: nn.Module) -> torch.Tensor:
        original, pipe.transformer = pipe.transformer, transformer
        try:
            images = [pipe(**inputs, **extra, num_inference_steps=steps, output_type="pt",
                           generator=torch.Generator().manual_seed(seed + k)).images
                      for k, inputs in enumerate(runs)]
        finally:
            pipe.transformer = original
        return torch.cat([torch.as_tensor(i) for i in images]).float() * 2 - 1

    return run


def pipeline_calibration_loop(pipe, prompts: list[str] | None, steps: int, seed: int = 10_000) -> CalibrationLoop:
    """Runs of the pipeline itself with the transformer under calibration swapped in (see
    :func:`pipeline_sampler`); the images are dropped."""
    sample = pipeline_sampler(pipe, prompts, steps, seed)
    log.info("calibrating on %d pipeline runs of %d steps", len(pipeline_runs(pipe, prompts)), steps)

    def calibrate(transformer: nn.Module) -> None:
        sample(transformer)

    return calibrate


def class_ids(pipe, prompts: list[str]) -> list[int]:
    """Class ids of a class-conditional pipeline's prompts: numbers as they are, names by its ``id2label``."""
    known = getattr(pipe, "labels", None) or {}
    ids = [int(p) if p.isdigit() else known.get(p) for p in prompts]
    unknown = [p for p, i in zip(prompts, ids) if i is None]
    if unknown:
        raise QuantizationError(f"this class-conditional pipeline has no label {unknown[0]!r}; write class ids (0, 1, "
                                f"...) or its label names ({', '.join(list(known)[:5]) or 'it has none'}), one per line.")
    return ids


def needs_calibration(config: QuantConfig) -> bool:
    """Static activations and channel balancing read calibration inputs; dynamic, unbalanced recipes do not."""
    static = config.activation is not None and not config.activation.dynamic
    return static or config.smooth_alpha is not None


def calibration_loop(source: QuantizationSource, config: QuantConfig) -> CalibrationLoop | None:
    if not needs_calibration(config):
        return None
    if source.calibrate is None:
        raise QuantizationError(source.why_not)
    return source.calibrate


def read_prompts(path: Path) -> list[str]:
    """One prompt per non-empty line of a UTF-8 text file."""
    try:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise QuantizationError(f"cannot read prompts from {path} ({error}); pass a UTF-8 text file, one prompt "
                                "per line.") from None
    if not prompts:
        raise QuantizationError(f"{path} holds no prompts; write one prompt per line.")
    return prompts


def quantize_to_folder(model: str, recipe: str, out: Path, backend: str | None = None,
                       allocation: Path | None = None, widths: tuple[int, ...] | None = None,
                       prompts: list[str] | None = None, search: SearchSettings | None = None, seed: int = 0,
                       progress: Progress = no_progress) -> dict:
    """Quantize the zoo model, pipeline folder or transformer folder ``model`` with ``recipe`` and save the
    quantized transformer to ``out``; a mixed-precision recipe without ``allocation`` is searched here.

    Args:
        model: a zoo model name, a diffusers pipeline folder or a diffusers transformer folder.
        recipe: a registered recipe. A mixed-precision one (``vidit-q-w4a8-mp``, ``mixdq-w4a8``, ...) runs its
            search on the model (a shipped generator as its bench runs it, or a pipeline on ``prompts``) and
            writes the record beside the checkpoint as ``allocation.json``, unless ``allocation`` gives the widths.
        out: the checkpoint folder to write.
        backend: another matmul path than the recipe's.
        allocation: an allocation written by an earlier search (``allocation.json``, ``*_allocation.json``).
        widths: store every layer at each of these widths in one multi-width checkpoint instead.
        prompts: calibration (and search) prompts for a pipeline folder.
        search: the mixed-precision search's settings (default: the published ones).
        seed: the search's seed.
        progress: the progress reporter.

    Returns:
        A summary: bytes held by the float and the quantized model (or the widths stored), and for a search
        what it chose (:func:`search_summary`).
    """
    from effigy.checkpoint import save, save_multiwidth
    from effigy.memory import held_bytes
    from effigy.nn.quantize import quantize, weight_nbytes

    source = quantization_source(model, prompts)
    record = None
    if recipe in MIXED_PRECISION_RECIPES and allocation is None:
        runs, settings = search_runs(model, source, prompts, seed, search or SearchSettings())
        config, record = mixed_precision.search(runs, recipe, settings, progress)
    else:
        config = _config_for(source.model, recipe, allocation)
    if backend is not None:
        config = replace(config, backend=backend)
    if widths is not None:
        save_multiwidth(source.model, config, out, widths, calibration_loop(source, config))
        return {"model": model, "recipe": config.name, "out": str(out), "widths": list(widths)}
    fp_bytes = held_bytes(source.model)
    quantized = quantize(source.model, config, calibration_loop(source, config))
    save(quantized, out)
    if allocation is not None:  # the search's record beside the weights (the config alone rebuilds the model)
        shutil.copyfile(allocation, Path(out) / "allocation.json")
    elif record is not None:
        with replaced_atomically(Path(out) / "allocation.json") as partial:  # what `--allocation` reads back
            partial.write_text(json.dumps(record, indent=1, default=float))
    held = held_bytes(quantized)
    summary = {"model": model, "recipe": config.name, "out": str(out), "fp32_held_bytes": fp_bytes,
               "held_bytes": held, "counted_weight_bytes": weight_nbytes(quantized), "ratio": held / fp_bytes}
    return summary if record is None else {**summary, "search": search_summary(recipe, config, record)}


def search_runs(model: str, source: QuantizationSource, prompts: list[str] | None, seed: int,
                settings: SearchSettings) -> tuple[mixed_precision.SearchRuns, SearchSettings]:
    """The runs a mixed-precision search samples with: a shipped generator's suite as its bench runs it (same
    seed, same allocation), or the user's pipeline on ``prompts``: the sensitivity run on the first
    :data:`SENSITIVITY_PROMPTS` of them in :data:`SENSITIVITY_STEPS` steps (seed + 20000), the validation run on
    all of them (seed + 1), judged by PSNR / SSIM against the float pipeline."""
    if model in ZOO.names("generator"):
        return mixed_precision.shipped_search(model, seed, settings.average_bits)
    pipe = source.pipeline
    if pipe is None:
        raise QuantizationError(f"the mixed-precision search samples the model, and {model!r} is a transformer "
                                "folder without its pipeline; pass the pipeline folder (with model_index.json), or "
                                "--allocation FILE from an earlier search.")
    texts = list(prompts or default_prompts(pipe))
    guidance = settings.guidance_scale
    sensitivity = pipeline_sampler(pipe, texts[:SENSITIVITY_PROMPTS], SENSITIVITY_STEPS, seed + 20_000, guidance)
    log.info("mixed-precision search on %d prompts (sensitivity: %d prompts, %d steps)", len(texts),
             min(len(texts), SENSITIVITY_PROMPTS), SENSITIVITY_STEPS)

    def validation() -> mixed_precision.ValidationRun:
        return mixed_precision.ValidationRun(pipeline_sampler(pipe, texts, VALIDATION_STEPS, seed + 1, guidance),
                                             fidelity_means)

    runs = mixed_precision.SearchRuns(pipe.transformer, source.calibrate, sensitivity, validation,
                                      task_metric="ssim_vs_fp", guidance_batch=guidance > 1,
                                      uncond_first=not is_class_conditional(pipe))
    return runs, settings


SENSITIVITY_PROMPTS, SENSITIVITY_STEPS, VALIDATION_STEPS = 4, 10, 20


def default_prompts(pipe) -> list[str]:
    """Class ids 0-7 for a class-conditional pipeline, :data:`EVERYDAY_CAPTIONS` for a text one."""
    return [str(i) for i in range(8)] if is_class_conditional(pipe) else list(EVERYDAY_CAPTIONS)


def fidelity_means(images: torch.Tensor, reference: torch.Tensor) -> dict:
    """Mean PSNR and SSIM against the float pipeline's images (a user's model has no task judge here)."""
    from effigy.evaluate.suites import image_quality

    return {key: values.float().mean().item() for key, values in image_quality(images, reference).items()}


def search_summary(recipe: str, config: QuantConfig, record: dict) -> dict:
    """What a search chose, for the user: the widths per layer (and how many layers at each), the metric that
    scored each group, the predicted loss of the chosen allocation (the sum of its table entries) and the
    measured quality on the validation run."""
    from collections import Counter

    table = record.get("table") or record.get("weight_table")
    chosen = record["assignment"]["bits"]
    summary = {"recipe": recipe, "layer_bits": dict(config.layer_bits),
               "layers_per_width": {str(b): n for b, n in sorted(Counter(config.layer_bits.values()).items())},
               "metric_per_group": table["metric"], "average_bits": record.get("achieved_average_bits"),
               "predicted_loss": sum(table["scores"][g][str(b)] for g, b in chosen.items())}
    if record.get("validation"):  # the trust-region search: the chosen row and the uniform base's
        base, picked = record["validation"][0], next(r for r in record["validation"] if r["max_moved"] == record[
            "max_moved"])
        summary["measured"] = {"chosen": _fidelity(picked), "uniform_base": _fidelity(base)}
    elif record.get("sweep"):  # MixDQ: the chosen sweep point's image MSE against FP
        summary["measured"] = {"chosen": {"mse_vs_fp": record["sweep"][record["chosen"]]["mse_vs_fp"]}}
    if record.get("activations"):
        summary["activations_in_float"] = record["activations"]["kept_in_float"]
    return summary


def _fidelity(row: dict) -> dict:
    return {k: row[k] for k in ("psnr_vs_fp", "ssim_vs_fp") if row.get(k) is not None}


def _config_for(float_model: nn.Module, recipe: str, allocation: Path | None) -> QuantConfig:
    from effigy.recipes import get_recipe
    from effigy.recipes.mixed_precision import config_from_allocation_file

    return get_recipe(recipe) if allocation is None else config_from_allocation_file(float_model, recipe, allocation)
