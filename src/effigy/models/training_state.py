"""Resumable training: the whole state of a run (weights, EMA, optimizer moments, random generator,
step) saved as safetensors + JSON every few hundred steps, so an interrupted hour-long CPU run picks up
where it stopped and ends with the same weights as an uninterrupted one.

Never a pickle: optimizer moments are flattened into named tensors, scalars go to the JSON.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from effigy.checkpoint.files import read_json, read_safetensors, replaced_atomically
from effigy.errors import CheckpointError

log = logging.getLogger(__name__)
STATE_FILE = "training_state.safetensors"
META_FILE = "training_state.json"
META_KEY = "effigy_training_meta"  # the step and config, in the tensors file's header


def save_training_state(folder: Path, step: int, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                        generator: torch.Generator, config: dict) -> None:
    """Write the state after ``step`` completed steps. The step, config and optimizer scalars go into the
    safetensors file's own header too, so the tensors and the step that made them are replaced in one atomic
    rename (an interrupt between the two files' renames cannot pair new tensors with an old step); the JSON
    beside it is a readable copy."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"{name}/{key}": value.detach().contiguous()
               for name, module in modules.items() for key, value in module.state_dict().items()}
    tensors |= _optimizer_tensors(optimizer)
    tensors["generator"] = generator.get_state()
    meta = {"step": step, "config": config, "param_groups": [_group_scalars(g) for g in optimizer.param_groups]}
    from safetensors.torch import save_file

    with replaced_atomically(folder / STATE_FILE) as partial:
        save_file(tensors, str(partial), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    with replaced_atomically(folder / META_FILE) as partial:
        partial.write_text(json.dumps(meta, indent=1, sort_keys=True))


def resume_training_state(folder: Path | None, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                          generator: torch.Generator, config: dict) -> int:
    """Restore a saved run into ``modules``, ``optimizer`` and ``generator``; returns the completed steps
    (0 when there is nothing to resume). A state written with another config is refused, not mixed in."""
    if folder is None or not ((folder / META_FILE).exists() or (folder / STATE_FILE).exists()):
        return 0
    meta = _state_meta(folder)
    if meta.get("config") != json.loads(json.dumps(config)):  # as JSON stores it: tuples are lists there
        raise CheckpointError(f"{folder} holds a training state of another config; delete it or use another "
                              "--checkpoint-dir to start this run afresh.")
    tensors = read_safetensors(folder / STATE_FILE)
    for name, module in modules.items():
        prefix = f"{name}/"
        module.load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
    _load_optimizer(optimizer, tensors, meta["param_groups"])
    generator.set_state(tensors["generator"])
    log.info("resumed training from %s at step %d", folder, meta["step"])
    return int(meta["step"])


def _state_meta(folder: Path) -> dict:
    """The step and config the saved tensors were written with: from the tensors file's header (states written
    since the header held it), else from the JSON beside it."""
    from safetensors import safe_open

    if (folder / STATE_FILE).exists():
        try:
            with safe_open(str(folder / STATE_FILE), "pt") as handle:
                header = (handle.metadata() or {}).get(META_KEY)
        except Exception:  # safetensors' own errors: a damaged file is reported when its tensors are read
            header = None
        if header is not None:
            try:
                meta = json.loads(header)
            except json.JSONDecodeError:
                raise CheckpointError(f"{folder / STATE_FILE} has a damaged header; delete {folder} to start "
                                      "afresh.") from None
            if isinstance(meta, dict) and isinstance(meta.get("step"), int):
                return meta
    return read_json(folder / META_FILE)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    return {f"optimizer/{index}/{key}": torch.as_tensor(value).contiguous()
            for index, slots in state.items() for key, value in slots.items()}


def _group_scalars(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "params" and isinstance(v, (int, float, bool, type(None)))}


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict]) -> None:
    reference = optimizer.state_dict()
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, index, slot = key.split("/")
            state.setdefault(int(index), {})[slot] = value
    param_groups = [{**ref, **saved} for ref, saved in zip(reference["param_groups"], groups)]
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def resumable_steps(checkpoint_dir: Path | None, modules: dict[str, nn.Module], optimizer: torch.optim.Optimizer,
                    generator: torch.Generator, config: dict, total_steps: int, every: int) -> Iterator[int]:
    """The step numbers still to run, resuming from ``checkpoint_dir``; the state is saved after every
    ``every``-th step and after the last, once the loop body of that step has finished.

    Args:
        checkpoint_dir: where the state is kept; None runs from step 0 and keeps none.
        modules, optimizer, generator, config: what :func:`save_training_state` stores.
        total_steps: the run's length; every: steps between saves.
    Returns:
        An iterator over ``range(done, total_steps)``.
    """
    done = resume_training_state(checkpoint_dir, modules, optimizer, generator, config)
    for step in range(done, total_steps):
        yield step
        if checkpoint_dir is not None and ((step + 1) % every == 0 or step + 1 == total_steps):
            save_training_state(checkpoint_dir, step + 1, modules, optimizer, generator, config)


def training_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, step: int, lr: float,
                  clip: tuple[nn.Module, float] | None = None,
                  progress: Callable[[int, float], None] | None = None) -> None:
    """One optimizer step of a training loop: set the step's learning rate, back-propagate ``loss``, clip the
    gradient norm of ``clip``'s module (if given), step, and report (step, loss). A parameter group with an
    ``lr_scale`` entry runs at that multiple of ``lr``."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip[0].parameters(), clip[1])
    optimizer.step()
    if progress is not None:
        progress(step, loss.item())


def warmup_cosine(step: int, total: int, warmup: int = 50, floor: float = 0.0) -> float:
    """The learning-rate factor of step ``step`` of ``total``: linear warm-up over ``warmup`` steps, then a
    cosine decay from 1 to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    return float(floor + (1 - floor) * 0.5 * (1 + np.cos(np.pi * (step - warmup) / max(total - warmup, 1))))
