"""Which float model a CLI name means, how to calibrate it, and quantize-then-save (``effigy quantize``)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.errors import QuantizationError
from effigy.models import dit_digits
from effigy.models.pretrained import load_pretrained
from effigy.models.zoo import ZOO, load_zoo_model
from effigy.nn import QuantConfig
from effigy.worlds.digits import NUM_CLASSES


def load_model_for_quantization(name_or_path: str) -> nn.Module:
    if name_or_path in ZOO:
        return load_zoo_model(name_or_path)[0]
    return load_pretrained(name_or_path)


def calibration_loop_for(model: str, config: QuantConfig, per_class: int = 2, steps: int = 20) -> Callable[[nn.Module], None] | None:
    """Static-activation and channel-balanced recipes calibrate on real sampling trajectories of the float model."""
    static = config.activation is not None and not config.activation.dynamic
    if not static and config.smooth_alpha is None:
        return None

    def calib_loop(transformer: nn.Module) -> None:
        arch = transformer.config
        if getattr(arch, "num_embeds_ada_norm", None) is None:
            raise QuantizationError(
                f"{model!r} is not a class-conditional DiT, so effigy cannot sample calibration data for it; "
                "use a recipe without calibration such as vidit-q-w8a8 or rtn-w4a8, or call effigy.quantize with "
                "your own calib_loop."
            )
        classes = min(arch.num_embeds_ada_norm, NUM_CLASSES)
        labels = torch.arange(classes).repeat_interleave(per_class)
        dit_digits.sample(transformer, dit_digits.DiTDigitsConfig(), labels, steps, seed=10_000)

    return calib_loop


def quantize_to_folder(model: str, recipe: str, out: Path, backend: str | None = None,
                       allocation: Path | None = None, widths: tuple[int, ...] | None = None) -> dict:
    """Quantize the zoo model or local folder ``model`` with ``recipe`` and save it to ``out``.

    Args:
        model: a zoo model name or a diffusers model folder.
        recipe: a registered recipe; a mixed-precision recipe needs ``allocation`` (per-group widths).
        out: the checkpoint folder to write.
        backend: another matmul path than the recipe's.
        allocation: the ``*_allocation.json`` written by ``effigy bench quant``.
        widths: store every layer at each of these widths in one multi-width checkpoint instead.

    Returns:
        A summary: bytes held by the float and the quantized model (or the widths stored).
    """
    from effigy.checkpoint import save, save_multiwidth
    from effigy.memory import held_bytes
    from effigy.nn.quantize import quantize, weight_nbytes

    float_model = load_model_for_quantization(model)
    config = _config_for(float_model, recipe, allocation)
    if backend is not None:
        config = replace(config, backend=backend)
    if widths is not None:
        save_multiwidth(float_model, config, out, widths, calibration_loop_for(model, config))
        return {"model": model, "recipe": config.name, "out": str(out), "widths": list(widths)}
    fp_bytes = held_bytes(float_model)
    quantized = quantize(float_model, config, calibration_loop_for(model, config))
    save(quantized, out)
    held = held_bytes(quantized)
    return {"model": model, "recipe": config.name, "out": str(out), "fp32_held_bytes": fp_bytes, "held_bytes": held,
            "counted_weight_bytes": weight_nbytes(quantized), "ratio": held / fp_bytes}


def _config_for(float_model: nn.Module, recipe: str, allocation: Path | None) -> QuantConfig:
    from effigy.recipes import get_recipe
    from effigy.recipes.mixed_precision import MIXED_PRECISION_RECIPES, config_from_allocation_file

    if recipe in MIXED_PRECISION_RECIPES and allocation is None:
        raise QuantizationError(f"{recipe} needs --allocation FILE: the per-group widths chosen by `effigy bench "
                                "quant` (e.g. benchmarks/results/quant_dit_digits_allocation.json).")
    return get_recipe(recipe) if allocation is None else config_from_allocation_file(float_model, recipe, allocation)
