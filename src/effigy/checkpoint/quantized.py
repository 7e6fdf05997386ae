"""``save(model, dir)`` and ``load(dir)``: a model, float or quantized, as a folder of safetensors + JSON.

A checkpoint is a folder: ``model.safetensors`` (packed integer weights and scales), ``config.json``
(the diffusers model config) and ``quantization_config.json`` (the :class:`QuantConfig`). Loading
rebuilds the model from its config, swaps in empty quantized layers, and loads the tensors strictly.
Pickled checkpoints are refused: they can run code when opened.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from effigy.checkpoint.files import read_json, read_safetensors, require_safetensors
from effigy.checkpoint.integrity import (
    check_finite,
    check_layout,
    meta_state,
    stored_layout,
    verify_digest,
    write_digest,
)
from effigy.errors import CheckpointError
from effigy.nn.config import QuantConfig
from effigy.nn.quantize import CONFIG_ATTR, quantized_skeleton
from effigy.registry import Registry

WEIGHTS_NAME = "model.safetensors"
MODEL_CONFIG_NAME = "config.json"
QUANT_CONFIG_NAME = "quantization_config.json"


# effigy's own model classes (diffusers subclasses, and models with ``save_config`` / ``from_config`` such as the
# VAR), by class name: each entry imports its class only when a checkpoint names it, so ``import effigy`` stays
# light. Only these and real diffusers models are ever built from a file.
MODEL_CLASSES: Registry[Callable[[], type]] = Registry("model class", CheckpointError)


def register_model_class(name: str, load_class: Callable[[], type]) -> None:
    """Let checkpoints whose config names ``name`` be rebuilt with the class ``load_class()`` returns."""
    MODEL_CLASSES.register(name, load_class)


def diffusers_model_class(name: str) -> type:
    """The model class named in a config's ``_class_name``: a diffusers model, or one of effigy's registered
    subclasses of one (see :data:`MODEL_CLASSES`); any other name is refused."""
    import diffusers

    if isinstance(name, str) and name in MODEL_CLASSES:
        return MODEL_CLASSES.get(name)()  # allowlisted: diffusers subclasses, or effigy models with save/from_config
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and issubclass(cls, diffusers.ModelMixin)):
        raise CheckpointError(f"model class {name!r} is not a diffusers model; effigy loads diffusers models "
                              f"and its own ({', '.join(MODEL_CLASSES)}).")
    return cls


def save(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model`` (float or quantized) as safetensors + JSON into ``directory``."""
    from safetensors.torch import save_file

    if not hasattr(model, "save_config"):
        raise CheckpointError(
            f"save() needs a diffusers model (with save_config); got {type(model).__name__}."
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_config(directory)
    config = getattr(model, CONFIG_ATTR, None)
    quant_file = directory / QUANT_CONFIG_NAME
    if config is not None:
        quant_file.write_text(json.dumps(config.to_dict(), indent=2))
    elif quant_file.exists():
        quant_file.unlink()
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / WEIGHTS_NAME), metadata={"format": "effigy"})
    write_digest(directory, [MODEL_CONFIG_NAME, WEIGHTS_NAME] + ([QUANT_CONFIG_NAME] if config is not None else []))
    return directory


def load(directory: str | Path) -> nn.Module:
    """Rebuild a model saved by :func:`save`: float or quantized, exactly as it was saved.

    Before anything is built, every file is checked against the checkpoint's digest and the weights' header
    against the model the configs describe (see :mod:`effigy.checkpoint.integrity`).

    Args:
        directory: the folder :func:`save` wrote.
    Returns:
        The model in eval mode.
    """
    directory = Path(directory)
    weights = _checked_weights_file(directory)
    quant_file = directory / QUANT_CONFIG_NAME
    verify_digest(directory, [MODEL_CONFIG_NAME, WEIGHTS_NAME] + ([QUANT_CONFIG_NAME] if quant_file.exists() else []))
    config = QuantConfig.from_dict(read_json(quant_file)) if quant_file.exists() else None
    build = lambda: _skeleton(directory, config)
    check_layout(meta_state(build), stored_layout(weights))
    state = read_safetensors(weights)
    check_finite(state)
    model = build()
    load_state_strictly(model, state)
    return model.eval()


def _skeleton(directory: Path, config: QuantConfig | None) -> nn.Module:
    model = model_from_config(directory)
    return model if config is None else quantized_skeleton(model, config)


def _checked_weights_file(directory: Path) -> Path:
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint folder {directory} does not exist; pass the folder written by effigy save.")
    weights = require_safetensors(directory, WEIGHTS_NAME)[0]
    return weights


def model_from_config(directory: Path) -> nn.Module:
    config_file = directory / MODEL_CONFIG_NAME
    if not config_file.exists():
        raise CheckpointError(f"{directory} has no {MODEL_CONFIG_NAME} describing the model architecture.")
    config = read_json(config_file)
    cls = diffusers_model_class(config.get("_class_name", ""))
    return cls.from_config(config)


def load_state_strictly(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load ``state`` into ``model`` only if names, shapes and dtypes are exactly the model's (no conversion)."""
    check_layout(model.state_dict(), {k: (tuple(v.shape), v.dtype) for k, v in state.items()})
    model.load_state_dict(state)
