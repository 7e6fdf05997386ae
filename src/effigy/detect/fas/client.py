"""The client's side of source-free adaptation: its own labelled face crops in, an adapted head out.

A client adapts the shipped model to its camera with a few crops of live faces and of attacks (two folders),
keeps the adapted head (prototypes and, for the mixup adaptors, a residual feature layer; safetensors, with a
JSON record of the base model it belongs to) and scores with it afterwards. The base model's weights are
never written.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from effigy.checkpoint.files import read_json, read_safetensors
from effigy.detect.fas.adapt import ClientHead, SourceView
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


VERSION = 3  # 3: the file's sha256 and the base model's sha256 are recorded and checked on load


def check_save_path(path: Path) -> Path:
    """``path`` as the place for an adapted head, checked before any work: a .safetensors name whose file and
    JSON record are not folders."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise CheckpointError(f"{path}: an adapted head is saved as .safetensors; name the file so.")
    for target in (path, path.with_suffix(".json")):
        if target.is_dir():
            raise CheckpointError(f"{target} is a folder; the adapted head needs {path.name} and "
                                  f"{path.with_suffix('.json').name} as files.")
    return path


def save_adapted(path: Path, head: ClientHead, record: dict) -> tuple[Path, Path]:
    """``path`` (safetensors, the head's tensors) and ``path`` with .json (what it adapts and how, with the
    tensors' sha256), each written to a temporary name and moved into place, the record last."""
    from safetensors.torch import save_file

    from effigy.checkpoint.files import replaced_atomically, sha256_of

    path = check_save_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replaced_atomically(path) as partial:
        save_file(head.tensors(), str(partial))
        digest = sha256_of(partial)
    sidecar = path.with_suffix(".json")
    with replaced_atomically(sidecar) as partial:
        partial.write_text(json.dumps({"format": FORMAT, "version": VERSION, "scale": head.scale, "sha256": digest,
                                       **record}, indent=2) + "\n")
    return path, sidecar


def load_adapted(path: Path, model: str, source: SourceView, model_sha256: str | None) -> ClientHead:
    """The head saved for ``model``, checked against the model in use before it scores anything: its record
    (format, version, the base model's name and sha256, the base scale), the file's sha256, and its tensors
    (float32, shapes, finite, non-zero centres), and that it still scores the base model's live centres above
    its attack centres (a head with swapped classes would invert every decision).

    Args:
        path: the .safetensors file from `effigy detect fas adapt --out`.
        model: the base model's zoo name.
        source: the base model's prototypes and scale.
        model_sha256: the base model's weights' sha256 (the manifest's), or None where it has none.
    Raises:
        CheckpointError: another model's head, a damaged or altered file, or a pickle.
    """
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if not path.is_file() or not sidecar.is_file():
        raise CheckpointError(f"{path} and {sidecar.name} are needed; write them with `effigy detect fas adapt --out`.")
    record = read_json(sidecar)
    _check_record(sidecar, record, model, source.scale, model_sha256)
    from effigy.checkpoint.files import sha256_of

    if sha256_of(path) != record["sha256"]:
        raise CheckpointError(f"{path} does not match the sha256 in {sidecar.name}: it was changed after "
                              "`adapt --out` wrote it; adapt again.")
    tensors = read_safetensors(path)
    _check_head(path, tensors, source.prototypes)
    head = ClientHead(tensors["prototypes"], float(record["scale"]), tensors.get("weight"), tensors.get("bias"))
    if not _keeps_base_order(head, source.prototypes):
        raise CheckpointError(f"{path} scores the base model's live centres below its attack centres (live and "
                              "attack swapped?): it would invert decisions; adapt again.")
    return head


def _check_record(sidecar: Path, record: dict, model: str, scale: float, model_sha256: str | None) -> None:
    if record.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar} is not an effigy adapted-head record; write it again with `adapt --out`.")
    if record.get("version") != VERSION or not isinstance(record.get("sha256"), str):
        raise CheckpointError(f"{sidecar} was written by another effigy version (record version "
                              f"{record.get('version')!r:.20}, expected {VERSION}); adapt again.")
    if record.get("model") != model:
        raise CheckpointError(f"{sidecar.with_suffix('.safetensors')} adapts {record.get('model')!r:.60}, not "
                              f"{model!r}; score with --model {str(record.get('model'))[:60]}.")
    if model_sha256 is not None and record.get("model_sha256") != model_sha256:
        raise CheckpointError(f"{sidecar} was adapted from other {model} weights (sha256 "
                              f"{str(record.get('model_sha256'))[:12]}..., these are {model_sha256[:12]}...); "
                              "adapt again with the weights in use.")
    found = record.get("scale")
    if not isinstance(found, (int, float)) or isinstance(found, bool) or not math.isclose(found, scale, rel_tol=1e-6):
        raise CheckpointError(f"{sidecar} has scale {found!r:.30}, not the base model's {scale:g} (every adaptor "
                              "keeps the base scale, so the threshold keeps its meaning); adapt again.")


def _check_head(path: Path, tensors: dict, base: torch.Tensor) -> None:
    classes, _, dim = base.shape
    unknown = sorted(set(tensors) - {"prototypes", "weight", "bias"})
    if unknown or any(t.dtype != torch.float32 for t in tensors.values()):
        raise CheckpointError(f"{path} holds {'unknown tensors ' + str(unknown) if unknown else 'tensors not in float32'}; "
                              "an adapted head is float32 prototypes and an optional weight and bias: adapt again.")
    prototypes = tensors.get("prototypes")
    if prototypes is None or prototypes.ndim != 3 or prototypes.shape[0] != classes or prototypes.shape[2] != dim:
        raise CheckpointError(f"{path} does not hold [{classes}, centres, {dim}] prototypes; write it again.")
    weight, bias = tensors.get("weight"), tensors.get("bias")
    unpaired = (weight is None) != (bias is None)
    if unpaired or (weight is not None and (tuple(weight.shape) != (dim, dim) or tuple(bias.shape) != (dim,))):
        raise CheckpointError(f"{path} holds a damaged feature layer (weight [{dim}, {dim}] and bias [{dim}] go "
                              "together); write it again.")
    if not all(torch.isfinite(t).all() for t in tensors.values()):
        raise CheckpointError(f"{path} holds NaN or infinite values; write it again.")
    if (prototypes.norm(dim=-1) < 1e-6).any():
        raise CheckpointError(f"{path} holds a zero prototype (it has no direction to compare faces with); "
                              "adapt again.")


def _keeps_base_order(head: ClientHead, base: torch.Tensor) -> bool:
    """Whether the head scores the base model's own live centres as more live than its attack centres.
    Adaptation moves the decision to a new camera (prototypes shift, a residual layer learns); it never turns
    the base model's clearest live example into an attack. A head with swapped classes, or one crafted to
    invert decisions, does."""
    centres = F.normalize(base.float(), dim=-1)
    with torch.no_grad():
        return bool(head(centres[1]).mean() > head(centres[0]).mean())
