"""The client's side of source-free adaptation: its own labelled face crops in, an adapted head out.

A client adapts the shipped model to its camera with a few crops of live faces and of attacks (two folders),
keeps the adapted head (prototypes and, for the mixup adaptors, a residual feature layer; safetensors, with a
JSON record of the base model it belongs to) and scores with it afterwards. The base model's weights are
never written.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from effigy.checkpoint.files import read_json, read_safetensors
from effigy.detect.fas.adapt import ClientHead
from effigy.errors import AdaptationError, CheckpointError
from effigy.worlds.faces import image_files, read_face_image

FORMAT = "effigy-fas-head"


def read_face_folder(folder: Path) -> np.ndarray:
    """[N, 3, 64, 64] the face crops of a folder (PNG, JPEG, BMP, WebP), in name order."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AdaptationError(f"{folder} is not a folder; give a folder of face crops.")
    return np.stack([read_face_image(p) for p in image_files([folder])])


def labelled_faces(live: Path | None, spoof: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """(images, live flags) from a folder of live crops and, optionally, one of attack crops."""
    if live is None:
        raise AdaptationError("give a folder of live face crops (--live); the adaptors need live samples.")
    parts = [(read_face_folder(live), True)] + ([(read_face_folder(spoof), False)] if spoof is not None else [])
    images = np.concatenate([p for p, _ in parts])
    flags = np.concatenate([np.full(len(p), flag) for p, flag in parts])
    return images, flags


def save_adapted(path: Path, head: ClientHead, record: dict) -> tuple[Path, Path]:
    """``path`` (safetensors, the head's tensors) and ``path`` with .json (what it adapts and how)."""
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: an adapted head is saved as .safetensors; name the file so.")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(head.tensors(), str(path))
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps({"format": FORMAT, "version": 2, "scale": head.scale, **record}, indent=2) + "\n")
    return path, sidecar


def load_adapted(path: Path, model: str, dim: int) -> ClientHead:
    """The head saved for ``model`` (features of size ``dim``); one clear error for another model's file, a
    damaged one or a pickle."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise CheckpointError(f"{path} and {sidecar.name} are needed; write them with `effigy detect fas adapt --save`.")
    record = read_json(sidecar)
    if record.get("format") != FORMAT or not isinstance(record.get("scale"), (int, float)):
        raise CheckpointError(f"{sidecar} is not an effigy adapted-head record; write it again with `adapt --save`.")
    if record.get("model") != model:
        raise CheckpointError(f"{path} adapts {record.get('model')!r}, not {model!r}; score with --model "
                              f"{record.get('model')}.")
    tensors = read_safetensors(path)
    _check_head(path, tensors, dim)
    return ClientHead(tensors["prototypes"], float(record["scale"]), tensors.get("weight"), tensors.get("bias"))


def _check_head(path: Path, tensors: dict, dim: int) -> None:
    prototypes = tensors.get("prototypes")
    if prototypes is None or prototypes.ndim != 3 or prototypes.shape[0] != 2 or prototypes.shape[2] != dim:
        raise CheckpointError(f"{path} does not hold [2, centres, {dim}] prototypes; write it again.")
    weight, bias = tensors.get("weight"), tensors.get("bias")
    unpaired = (weight is None) != (bias is None)
    if unpaired or (weight is not None and (tuple(weight.shape) != (dim, dim) or tuple(bias.shape) != (dim,))):
        raise CheckpointError(f"{path} holds a damaged feature layer (weight [{dim}, {dim}] and bias [{dim}] go "
                              "together); write it again.")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CheckpointError(f"{path} holds NaN or infinite values; write it again.")
