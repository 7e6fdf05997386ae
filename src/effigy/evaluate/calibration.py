"""Which float model a CLI name means, and how to calibrate it (used by ``effigy quantize``)."""
from __future__ import annotations

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
