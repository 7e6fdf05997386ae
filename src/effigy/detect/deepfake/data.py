"""What the deepfake encoder trains on: the forgery world's train split (the config's families and domains),
each image with its caption (from the pool of its kind) embedded by the frozen MiniLM text tower."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from effigy.detect.deepfake.captions import KINDS, write_captions, write_cue_captions
from effigy.detect.deepfake.model import DeepfakeConfig
from effigy.worlds.deepfakes import ForgeryImages, render_forgeries

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]  # images, fake, text, kind


def training_images(config: DeepfakeConfig, split: str = "train") -> ForgeryImages:
    """The captures a model with ``config`` trains on (its families and domains only), with the photo-SBI pairs
    when ``config.photo_sbi`` (training split only)."""
    world = render_forgeries(split, config.families, config.domains, config.reals_per_identity,
                             config.fakes_per_family, seed=config.seed)
    if not (config.photo_sbi and split == "train"):
        return world
    from effigy.detect.deepfake.photos import photo_sbi_pairs

    return ForgeryImages.concat([world, photo_sbi_pairs(config.seed)])


def kind_ids(data: ForgeryImages) -> np.ndarray:
    """[N] each row's index in ``captions.KINDS`` (its family and region)."""
    return np.array([KINDS.index((str(f), str(r))) for f, r in zip(data.family, data.region)])


def caption_keys(config: DeepfakeConfig, data: ForgeryImages) -> tuple[list[tuple[str, ...]], np.ndarray]:
    """(the caption pools' keys, each row's index among them): (family, region) per row, or with
    ``caption_detail='cues'`` (family, region, visible cues) per fake row."""
    if config.caption_detail == "kind":
        return list(KINDS), kind_ids(data)
    rows = [(str(f), str(r), str(c)) for f, r, c in zip(data.family, data.region, data.cues)]
    keys = sorted(set(rows))
    index = {key: i for i, key in enumerate(keys)}
    return keys, np.array([index[row] for row in rows])


def caption_embeddings(config: DeepfakeConfig, data: ForgeryImages) -> tuple[torch.Tensor, np.ndarray]:
    """([N, 384] the MiniLM sentence embedding of each row's caption, [N] its pool's id): a caption drawn
    (seeded) from the row's pool, fixed for the whole training."""
    from effigy.models.encoders.text_encoder import MiniLMTextEncoder, sentence_features

    keys, ids = caption_keys(config, data)
    per_kind = config.captions_per_kind
    pools = (write_captions(per_kind, config.seed) if config.caption_detail == "kind"
             else write_cue_captions(tuple(keys), per_kind, config.seed))
    captions = [caption for key in keys for caption in pools.pools[key]]
    encoder = MiniLMTextEncoder()
    embedded = torch.cat([sentence_features(*encoder.encode(captions[i: i + 64])) for i in range(0, len(captions), 64)])
    choice = np.random.default_rng(config.seed).integers(per_kind, size=len(ids))
    return embedded[ids * per_kind + choice], ids


def training_batch_source(config: DeepfakeConfig) -> Callable[[torch.Generator], Batch]:
    """A function from a generator to a random training batch (flipped and shifted images, fake labels, and,
    for the contrastive modes, caption embeddings and kind ids)."""
    from effigy.detect.fas.model import augment

    data = training_images(config)
    images, fake = torch.from_numpy(data.images), torch.from_numpy(data.fake)
    text, ids = caption_embeddings(config, data) if config.contrastive != "none" else (None, kind_ids(data))
    groups = torch.from_numpy(ids)

    def batch(generator: torch.Generator) -> Batch:
        rows = torch.randint(len(images), (config.batch_size,), generator=generator)
        picked_text = None if text is None else text[rows]
        return augment(images[rows], generator), fake[rows], picked_text, groups[rows]

    return batch
