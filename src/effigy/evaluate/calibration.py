"""Which float model a CLI name means, how to calibrate it, and quantize-then-save (``effigy quantize``).

A model is a zoo name (calibrated on its suite's own calibration prompts), a diffusers pipeline folder
(its transformer is quantized, calibrated by running the pipeline on ``--prompts`` or on a built-in set
of everyday captions; class-conditional pipelines on their class labels), or a diffusers transformer folder
(class-conditional ones calibrate on their labels; a text-conditioned transformer alone cannot be
calibrated, since the text encoder lives in the pipeline).
"""
from __future__ import annotations

import inspect
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.errors import QuantizationError
from effigy.models.pretrained import is_pipeline_folder, load_pipeline, load_pretrained
from effigy.models.zoo import ZOO
from effigy.nn import QuantConfig

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


def pipeline_calibration_loop(pipe, prompts: list[str] | None, steps: int, batch: int = 4,
                              seed: int = 10_000) -> CalibrationLoop:
    """Runs of the pipeline itself with the transformer under calibration swapped in: text pipelines on
    ``prompts`` (or :data:`EVERYDAY_CAPTIONS`), class-conditional ones (``DiTPipeline``) on their labels."""
    pipe.set_progress_bar_config(disable=True)
    accepted = inspect.signature(pipe.__call__).parameters
    extra = {k: v for k, v in (("use_resolution_binning", False), ("clean_caption", False)) if k in accepted}
    if "class_labels" in accepted:
        labels = class_ids(pipe, prompts) if prompts else list(range(8))
        runs = [dict(class_labels=labels[i: i + batch]) for i in range(0, len(labels), batch)]
    else:
        texts = list(prompts or EVERYDAY_CAPTIONS)
        runs = [dict(prompt=texts[i: i + batch]) for i in range(0, len(texts), batch)]
    log.info("calibrating on %d pipeline runs of %d steps", len(runs), steps)

    def calibrate(transformer: nn.Module) -> None:
        original, pipe.transformer = pipe.transformer, transformer
        try:
            for k, run in enumerate(runs):
                pipe(**run, **extra, num_inference_steps=steps, output_type="np",
                     generator=torch.Generator().manual_seed(seed + k))
        finally:
            pipe.transformer = original

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
                       prompts: list[str] | None = None) -> dict:
    """Quantize the zoo model, pipeline folder or transformer folder ``model`` with ``recipe`` and save the
    quantized transformer to ``out``.

    Args:
        model: a zoo model name, a diffusers pipeline folder or a diffusers transformer folder.
        recipe: a registered recipe; a mixed-precision recipe needs ``allocation`` (per-group widths).
        out: the checkpoint folder to write.
        backend: another matmul path than the recipe's.
        allocation: the ``*_allocation.json`` written by ``effigy bench quant``.
        widths: store every layer at each of these widths in one multi-width checkpoint instead.
        prompts: calibration prompts for a pipeline folder.

    Returns:
        A summary: bytes held by the float and the quantized model (or the widths stored).
    """
    from effigy.checkpoint import save, save_multiwidth
    from effigy.memory import held_bytes
    from effigy.nn.quantize import quantize, weight_nbytes

    source = quantization_source(model, prompts)
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
    held = held_bytes(quantized)
    return {"model": model, "recipe": config.name, "out": str(out), "fp32_held_bytes": fp_bytes, "held_bytes": held,
            "counted_weight_bytes": weight_nbytes(quantized), "ratio": held / fp_bytes}


def _config_for(float_model: nn.Module, recipe: str, allocation: Path | None) -> QuantConfig:
    from effigy.recipes import get_recipe
    from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES, config_from_allocation_file

    if recipe in MIXED_PRECISION_RECIPES and allocation is None:
        raise QuantizationError(f"{recipe} needs --allocation FILE: the per-group widths chosen by `effigy bench "
                                "quant` (e.g. benchmarks/results/quant/dit-digits/quant_dit_digits_allocation.json).")
    return get_recipe(recipe) if allocation is None else config_from_allocation_file(float_model, recipe, allocation)
