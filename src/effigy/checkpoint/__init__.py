"""Checkpoints: save / load (safetensors + JSON), multi-width checkpoints, safe file reading."""
from effigy.checkpoint.files import read_safetensors, require_safetensors, sha256_of
from effigy.checkpoint.multiwidth import load_multiwidth, multiwidth_info, save_multiwidth
from effigy.checkpoint.quantized import load, save

__all__ = ["load", "load_multiwidth", "multiwidth_info", "read_safetensors", "require_safetensors", "save",
           "save_multiwidth", "sha256_of"]
