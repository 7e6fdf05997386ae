"""Reading checkpoint files safely: safetensors only (pickles are refused, as opening them can run
code), JSON with a clear error when damaged, sha256 digests for shipped weights."""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch

from effigy.errors import CheckpointError
from effigy.serialize import read_json_file

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def require_safetensors(folder: Path, weights_name: str = "*.safetensors") -> list[Path]:
    """The safetensors files of ``folder``; a folder with only pickled weights gets a clear refusal."""
    found = sorted(folder.glob(weights_name))
    if found:
        return found
    pickles = [p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES]
    if pickles:
        raise CheckpointError(
            f"{folder} holds only pickled weights ({', '.join(pickles)}); effigy refuses pickles because "
            "opening them can run code. Convert them to safetensors with a tool you trust."
        )
    raise CheckpointError(f"{folder} has no {weights_name} weights; is this a model folder?")


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a safetensors file, turning a corrupt or truncated file into a :class:`CheckpointError`."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types and OSError for broken files
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); the file is corrupt or truncated: "
            "save or download it again."
        ) from None


def read_json(path: Path) -> dict:
    """A checkpoint's JSON file as a mapping, or one line saying the checkpoint is damaged."""
    data = read_json_file(path, "a JSON file of an effigy checkpoint (the checkpoint is damaged)", CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a JSON {type(data).__name__}, not an object; the checkpoint is damaged.")
    return data


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path`` to write to; renamed onto ``path`` when the block ends without an
    error (removed otherwise), so ``path`` is always whole: the old file or the new one, never half of one."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
