"""A small DiT (diffusers ``DiTTransformer2DModel``) trained on the real LFW face crops: the generator of the
deepfake world's entirely synthetic faces.

It learns the 60 train-split crops of ``lfw_subset`` (grey, 25x25, sampled at 24x24 and flipped), so the test
identities stay unseen; one class ("a face") plus the null label diffusers adds, so classifier-free guidance
sharpens faces the way it sharpens digits. Its samples are what a small generator makes of 60 faces; how close
they come to real crops is measured (``effigy bench deepfake``), not assumed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DiTTransformer2DModel

from effigy.models.config import TrainConfig
from effigy.models.generators.diffusion import DiffusionTraining, train_eps_model
from effigy.models.generators.dit_digits import sample

CROP = 25  # the LFW crops' side


@dataclass
class DiTFacesConfig(TrainConfig):
    """Architecture, training and sampling settings of the shipped face DiT (saved beside its weights)."""

    sample_size: int = 24
    patch_size: int = 2
    num_layers: int = 4
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    train_steps: int = 3000
    batch_size: int = 32
    learning_rate: float = 5e-4
    ema_decay: float = 0.999
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    sampling_steps: int = 20
    guidance_scale: float = 2.0
    seed: int = 0


def build_transformer(config: DiTFacesConfig) -> DiTTransformer2DModel:
    """A one-class DiT on grey crops (label 0 is a face, label 1 the null label of guidance)."""
    return DiTTransformer2DModel(
        num_attention_heads=config.num_attention_heads, attention_head_dim=config.attention_head_dim,
        in_channels=1, out_channels=1, num_layers=config.num_layers, sample_size=config.sample_size,
        patch_size=config.patch_size, num_embeds_ada_norm=1, norm_num_groups=1)


def training_crops(size: int) -> torch.Tensor:
    """[120, 1, size, size] in [-1, 1]: the train split's real crops and their mirror images."""
    from effigy.worlds.faces import real_faces, split_identities

    crops = torch.from_numpy(real_faces()[split_identities("train")]).unsqueeze(1)
    crops = F.interpolate(crops, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return torch.cat([crops, crops.flip(-1)]).clamp(0, 1) * 2 - 1


def train(config: DiTFacesConfig, progress: Callable[[int, float], None] | None = None) -> DiTTransformer2DModel:
    """Seeded epsilon-prediction training on the train split's crops (shared diffusion loop, EMA weights)."""
    crops = training_crops(config.sample_size)

    def make_batch(generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        pick = torch.randint(0, len(crops), (config.batch_size,), generator=generator)
        return crops[pick], {"class_labels": torch.zeros(config.batch_size, dtype=torch.long)}

    return train_eps_model(lambda: build_transformer(config), make_batch, DiffusionTraining.from_config(config), progress)


def generate_faces(transformer: DiTTransformer2DModel, config: DiTFacesConfig, count: int, seed: int,
                   batch_size: int = 128) -> np.ndarray:
    """[count, 25, 25] float32 in [0, 1]: sampled face crops (DPM-Solver++ with guidance), framed as the LFW
    crops are, so that the face world poses, lights and captures them like real ones.

    Args:
        transformer, config: the face DiT and its settings (sampling steps, guidance scale, schedule).
        count: how many crops.
        seed: fixes the noise; batch ``k`` draws with ``seed + k``.
    """
    batches = []
    for k, start in enumerate(range(0, count, batch_size)):
        n = min(batch_size, count - start)
        images = sample(transformer, config, torch.zeros(n, dtype=torch.long), config.sampling_steps,
                        config.guidance_scale, seed + k)
        batches.append(F.interpolate((images + 1) / 2, size=(CROP, CROP), mode="bilinear", align_corners=False))
    return torch.cat(batches)[:, 0].clamp(0, 1).numpy().astype(np.float32)
