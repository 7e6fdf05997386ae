"""Loading diffusers models from a local folder or the hub, safetensors only."""
from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from effigy.checkpoint.files import require_safetensors
from effigy.checkpoint.quantized import diffusers_model_class
from effigy.errors import CheckpointError


def load_pretrained(path_or_id: str, subfolder: str | None = None) -> nn.Module:
    """``from_pretrained`` for a diffusers model folder (or hub id, where the hub is reachable).

    Only safetensors weights are accepted (``use_safetensors=True``): pickles are never opened.
    """
    folder = Path(path_or_id) / (subfolder or "")
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.exists():
            raise CheckpointError(f"{folder} has no config.json; point at a diffusers model folder.")
        cls = diffusers_model_class(json.loads(config_file.read_text()).get("_class_name"))
        require_safetensors(folder)
        return cls.from_pretrained(str(folder), use_safetensors=True).eval()
    looks_like_path = path_or_id.startswith(("/", ".", "~")) or path_or_id.count("/") != 1
    if Path(path_or_id).exists() or looks_like_path:
        raise CheckpointError(f"{path_or_id!r} is neither a model folder nor a hub id like 'org/name'.")
    from diffusers import DiTTransformer2DModel

    try:
        return DiTTransformer2DModel.from_pretrained(path_or_id, subfolder=subfolder or "transformer",
                                                     use_safetensors=True).eval()
    except OSError as exc:
        raise CheckpointError(f"could not load {path_or_id!r} from the hub ({exc}); without network access, "
                              "download it elsewhere and pass the local folder.") from None
