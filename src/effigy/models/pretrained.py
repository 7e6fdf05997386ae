"""Loading diffusers models from a local folder or the hub, safetensors only."""
from __future__ import annotations

from pathlib import Path

from torch import nn

from effigy.checkpoint.files import PICKLE_SUFFIXES, read_json, require_safetensors
from effigy.checkpoint.integrity import DIGEST_NAME
from effigy.checkpoint.quantized import diffusers_model_class
from effigy.errors import CheckpointError


def load_pretrained(path_or_id: str, subfolder: str | None = None) -> nn.Module:
    """``from_pretrained`` for a diffusers model folder (or hub id, where the hub is reachable).

    Only safetensors weights are accepted (``use_safetensors=True``): pickles are never opened.
    """
    folder = Path(path_or_id) / (subfolder or "")
    if (folder / DIGEST_NAME).is_file():  # effigy's own checkpoint (effigy.save), float or quantized
        from effigy.checkpoint.quantized import load

        return load(folder)
    if folder.is_dir():
        config_file = folder / "config.json"
        if not config_file.exists():
            raise CheckpointError(f"{folder} has no config.json; point at a diffusers model folder.")
        cls = diffusers_model_class(read_json(config_file).get("_class_name"))
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


PIPELINE_INDEX = "model_index.json"


def is_pipeline_folder(path: str | Path) -> bool:
    """A diffusers pipeline folder (``model_index.json`` beside one subfolder per component)."""
    return (Path(path) / PIPELINE_INDEX).is_file()


def load_pipeline(folder: str | Path):
    """A local diffusers pipeline, every weight file safetensors (pickled components are refused).

    Args:
        folder: a folder written by ``pipeline.save_pretrained``.
    Returns:
        The pipeline, on CPU, its transformer in eval mode.
    """
    from diffusers import DiffusionPipeline

    folder = Path(folder)
    index = read_json(folder / PIPELINE_INDEX)
    for component, spec in index.items():
        weights = folder / component
        if isinstance(spec, list) and weights.is_dir() and any(p.suffix in (*PICKLE_SUFFIXES, ".safetensors")
                                                              for p in weights.iterdir()):
            require_safetensors(weights)
    if "transformer" not in index:
        raise CheckpointError(f"{folder} is a pipeline without a transformer; effigy quantizes diffusion transformers.")
    from diffusers.utils import logging as diffusers_logging

    # diffusers' "Loading pipeline components" bar ignores HF_HUB_DISABLE_PROGRESS_BARS: off for this load only
    shown = diffusers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    try:
        pipe = DiffusionPipeline.from_pretrained(str(folder), use_safetensors=True, local_files_only=True)
    except Exception as exc:  # a third-party folder can fail in any component's loader (tokenizer, config, ...)
        raise CheckpointError(f"could not load the pipeline in {folder} ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}).") from None
    finally:
        if shown:
            diffusers_logging.enable_progress_bar()
    pipe.transformer.eval()
    return pipe
