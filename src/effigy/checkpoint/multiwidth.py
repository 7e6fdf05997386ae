"""Multi-width checkpoints: every quantized layer's packed weights and scales at several candidate
bit-widths (e.g. 4/6/8) in one safetensors file, calibrated once.

Why: a mixed-precision search (or a user trading memory for quality later) can then pick any width
per layer from the file, without the float model and without recalibrating; channel-balancing
divisors and static activation scales depend on neither the width nor the other layers, so they
are shared. ``load_multiwidth(dir, layer_bits)`` rebuilds a normal quantized model.
"""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.checkpoint.files import read_json, read_safetensors, require_safetensors
from effigy.checkpoint.integrity import verify_digest, write_digest
from effigy.checkpoint.quantized import MODEL_CONFIG_NAME, load_state_strictly, model_from_config
from effigy.errors import CheckpointError, QuantizationError
from effigy.nn import QuantConfig, find_targets
from effigy.nn.quantize import balance_divisors, quantize, quantized_skeleton

MULTIWIDTH_WEIGHTS = "multiwidth.safetensors"
MULTIWIDTH_CONFIG = "multiwidth_config.json"


def save_multiwidth(model: nn.Module, config: QuantConfig, directory: str | Path, widths: tuple[int, ...] = (4, 6, 8),
                    calib_loop: Callable[[nn.Module], None] | None = None) -> Path:
    """Quantize the float ``model`` with ``config`` at each of ``widths`` and store all of them."""
    from safetensors.torch import save_file

    if not widths or len(set(widths)) != len(widths):
        raise QuantizationError(f"widths must be distinct bit-widths, got {widths}")
    if not hasattr(model, "save_config"):
        raise CheckpointError(f"save_multiwidth() needs a diffusers model (with save_config); got {type(model).__name__}.")
    divisors = balance_divisors(model, config, calib_loop)
    targets = set(find_targets(model, config.include, config.ignore))
    tensors: dict[str, torch.Tensor] = {}
    for bits in widths:
        uniform = replace(config, weight=replace(config.weight, bits=bits), layer_bits={})
        quantized = quantize(copy.deepcopy(model), uniform, calib_loop, input_divisors=divisors)
        for key, value in quantized.state_dict().items():
            name = f"w{bits}/{key}" if _owner(key, targets) else key
            tensors.setdefault(name, value.detach().contiguous())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_config(directory)
    (directory / MULTIWIDTH_CONFIG).write_text(json.dumps({"widths": sorted(widths), "base": config.to_dict()}, indent=2))
    save_file(tensors, str(directory / MULTIWIDTH_WEIGHTS), metadata={"format": "effigy-multiwidth"})
    write_digest(directory, [MODEL_CONFIG_NAME, MULTIWIDTH_CONFIG, MULTIWIDTH_WEIGHTS])
    return directory


def multiwidth_info(directory: str | Path) -> tuple[QuantConfig, list[int]]:
    """The base recipe and the widths stored in a multi-width checkpoint."""
    path = Path(directory) / MULTIWIDTH_CONFIG
    if not path.exists():
        raise CheckpointError(f"{directory} is not a multi-width checkpoint (no {MULTIWIDTH_CONFIG}); "
                              "write one with save_multiwidth or `effigy quantize --widths 4,6,8`.")
    verify_digest(Path(directory), [MODEL_CONFIG_NAME, MULTIWIDTH_CONFIG, MULTIWIDTH_WEIGHTS])
    data = read_json(path)
    return QuantConfig.from_dict(data["base"]), list(data["widths"])


def load_multiwidth(directory: str | Path, layer_bits: dict[str, int] | None = None,
                    default_bits: int | None = None) -> nn.Module:
    """A quantized model with each layer at ``layer_bits[name]`` (others at ``default_bits``, by default
    the base recipe's width), taken from the stored candidates."""
    directory = Path(directory)
    base, widths = multiwidth_info(directory)
    default_bits = default_bits or base.weight.bits
    layer_bits = dict(layer_bits or {})
    model = model_from_config(directory)
    targets = find_targets(model, base.include, base.ignore)
    unknown = sorted(set(layer_bits) - set(targets))
    if unknown:
        raise QuantizationError(f"layer_bits names layers this checkpoint does not quantize: {unknown[:3]}")
    chosen = {name: layer_bits.get(name, default_bits) for name in targets}
    absent = sorted({b for b in chosen.values()} - set(widths))
    if absent:
        raise QuantizationError(f"widths {absent} are not stored in this checkpoint (it holds {widths}); "
                                "pick among those or re-run save_multiwidth with them.")
    config = replace(base, layer_bits={n: b for n, b in chosen.items() if b != base.weight.bits},
                     name=f"{base.name}-selected")
    quantized_skeleton(model, config)
    stored = read_safetensors(require_safetensors(directory, MULTIWIDTH_WEIGHTS)[0])
    state = {}
    for key in model.state_dict():
        layer = _owner(key, chosen)
        source = f"w{chosen[layer]}/{key}" if layer else key
        if source in stored:
            state[key] = stored[source]
    load_state_strictly(model, state)
    return model.eval()


def _owner(key: str, layers) -> str | None:
    """The quantized layer a state-dict key belongs to (timestep-range copies included), if any."""
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:end]) in layers:
            return ".".join(parts[:end])
    return None
