"""What a checkpoint promises and how load checks it before trusting a byte of it.

``save`` writes ``checkpoint_digest.json``: the sha256 of every file of the checkpoint. ``load`` refuses a
checkpoint whose files do not match it (any flipped byte in the weights or the configs), then checks the
weights file's header (names, shapes, dtypes) against the model the configs describe, built on the meta
device so that a config asking for a huge model costs nothing, and finally that every floating tensor
is finite. The digest guards against damage, not against someone who rewrites it: pickles are never
opened either way (see docs/security.md).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from effigy.checkpoint.files import read_json, sha256_of
from effigy.errors import CheckpointError

DIGEST_NAME = "checkpoint_digest.json"
DIGEST_FORMAT = "effigy-checkpoint-digest/1"


def write_digest(directory: Path, names: list[str]) -> None:
    """Record the sha256 of each named file of ``directory``."""
    files = {name: sha256_of(directory / name) for name in sorted(names)}
    (directory / DIGEST_NAME).write_text(json.dumps({"format": DIGEST_FORMAT, "files": files}, indent=2))


def verify_digest(directory: Path, required: list[str]) -> None:
    """Every file the digest names matches it, and the digest names every ``required`` file."""
    path = directory / DIGEST_NAME
    if not path.exists():
        raise CheckpointError(f"{directory} has no {DIGEST_NAME}: it was written by an older effigy or damaged; "
                              "save it again with effigy.save (or effigy quantize).")
    digest = read_json(path)  # a mapping, or a CheckpointError
    files = digest.get("files")
    if digest.get("format") != DIGEST_FORMAT or not isinstance(files, dict):
        raise CheckpointError(f"{path} is not an effigy checkpoint digest ({DIGEST_FORMAT}).")
    unlisted = sorted(set(required) - set(files))
    if unlisted:
        raise CheckpointError(f"{path} does not cover {unlisted[0]}; the checkpoint was changed after saving.")
    for name, expected in files.items():
        target = directory / str(name)
        if not target.is_file():
            raise CheckpointError(f"{directory} lacks {name}, which its digest lists; the checkpoint is incomplete.")
        if sha256_of(target) != expected:
            raise CheckpointError(f"{target} does not match the checkpoint's digest: the file was changed or damaged "
                                  "after saving. Save the model again.")


def stored_layout(path: Path) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) from a safetensors header, without reading the tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), _dtype(f.get_slice(k).get_dtype())) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own types for a damaged header
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}); the file is corrupt or truncated: "
                              "save or download it again.") from None


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _dtype(name: str) -> torch.dtype | str:
    return _DTYPES.get(name, name)


def check_layout(expected: dict[str, torch.Tensor], stored: dict[str, tuple[tuple[int, ...], object]]) -> None:
    """The stored tensors are exactly the model's: same names, shapes and dtypes (no silent conversion)."""
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong_shape = [k for k in expected if k in stored and stored[k][0] != tuple(expected[k].shape)]
    wrong_dtype = [f"{k} ({stored[k][1]} for {expected[k].dtype})" for k in expected
                   if k in stored and k not in wrong_shape and stored[k][1] != expected[k].dtype]
    parts = [f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
             for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape),
                                 ("wrong dtype", wrong_dtype)) if keys]
    if parts:
        raise CheckpointError("the weights do not match the model described by the checkpoint's configs ("
                              + "; ".join(parts) + "). Was the file saved from a different model or recipe?")


def check_finite(state: dict[str, torch.Tensor]) -> None:
    """Scales, biases and float weights hold no NaN or infinity."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"tensor {name} holds NaN or infinite values; the checkpoint is damaged.")


def meta_state(build) -> dict[str, torch.Tensor]:
    """The state dict of ``build()`` constructed on the meta device: shapes and dtypes, no memory."""
    with torch.device("meta"):
        model: nn.Module = build()
    return model.state_dict()
