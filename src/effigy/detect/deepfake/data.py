"""What the deepfake encoder trains on: the forgery world's train split (the config's families and domains),
each image with its caption (from the pool of its kind) embedded by the frozen MiniLM text tower."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from effigy.detect.deepfake.captions import KINDS, write_captions
from effigy.detect.deepfake.model import DeepfakeConfig
from effigy.worlds.deepfakes import ForgeryImages, render_forgeries

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # images, fake, text, kind


def training_images(config: DeepfakeConfig, split: str = "train") -> ForgeryImages:
    """The captures a model with ``config`` trains on (its families and domains only)."""
    return render_forgeries(split, config.families, config.domains, config.reals_per_identity,
                            config.fakes_per_family, seed=config.seed)


def kind_ids(data: ForgeryImages) -> np.ndarray:
    """[N] each row's index in ``captions.KINDS`` (its family and region)."""
    return np.array([KINDS.index((str(f), str(r))) for f, r in zip(data.family, data.region)])


def caption_embeddings(config: DeepfakeConfig, kinds: np.ndarray) -> torch.Tensor:
    """[N, 384] the MiniLM sentence embedding of each row's caption: a caption drawn (seeded) from its kind's
    pool, fixed for the whole training."""
    from effigy.models.encoders.text_encoder import MiniLMTextEncoder, sentence_features

    pools = write_captions(config.captions_per_kind, config.seed)
    captions = [caption for kind in KINDS for caption in pools.pools[kind]]
    encoder = MiniLMTextEncoder()
    embedded = torch.cat([sentence_features(*encoder.encode(captions[i: i + 64])) for i in range(0, len(captions), 64)])
    choice = np.random.default_rng(config.seed).integers(config.captions_per_kind, size=len(kinds))
    return embedded[kinds * config.captions_per_kind + choice]


def training_batch_source(config: DeepfakeConfig) -> Callable[[torch.Generator], Batch]:
    """A function from a generator to a random training batch (flipped and shifted images, fake labels, and,
    for the contrastive modes, caption embeddings and kind ids)."""
    from effigy.detect.fas.model import augment

    data = training_images(config)
    images, fake = torch.from_numpy(data.images), torch.from_numpy(data.fake)
    kinds = kind_ids(data)
    text = caption_embeddings(config, kinds) if config.contrastive != "none" else None
    groups = torch.from_numpy(kinds)

    def batch(generator: torch.Generator) -> Batch:
        rows = torch.randint(len(images), (config.batch_size,), generator=generator)
        picked_text = None if text is None else text[rows]
        return augment(images[rows], generator), fake[rows], picked_text, groups[rows]

    return batch
