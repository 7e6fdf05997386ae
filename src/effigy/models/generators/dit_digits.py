"""A class-conditional DiT (diffusers ``DiTTransformer2DModel``) trained on scikit-learn digits.

No DiT weights exist offline, so effigy trains its own on CPU with a seeded command and ships them.
Everything a user would touch is stock diffusers: the transformer class, the DDPM training
schedule and the DPM-Solver sampler, so a method that works here works on a real DiT pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from diffusers import DiTTransformer2DModel

from effigy.models.config import TrainConfig
from effigy.models.generators.diffusion import (
    DiffusionTraining,
    sample_with_guidance,
    sampling_scheduler,
    train_eps_model,
)
from effigy.worlds.digits import NUM_CLASSES, augment, load_digits_images, split_indices


@dataclass
class DiTDigitsConfig(TrainConfig):
    """Architecture and training settings of the shipped digits DiT (saved beside its weights)."""

    sample_size: int = 16
    patch_size: int = 2
    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    train_steps: int = 3000
    batch_size: int = 64
    learning_rate: float = 6e-4
    ema_decay: float = 0.999
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    seed: int = 0


def build_transformer(config: DiTDigitsConfig) -> DiTTransformer2DModel:
    """A diffusers DiT for one-channel images; ``num_embeds_ada_norm`` classes plus one null label for CFG."""
    return DiTTransformer2DModel(
        num_attention_heads=config.num_attention_heads,
        attention_head_dim=config.attention_head_dim,
        in_channels=1,
        out_channels=1,
        num_layers=config.num_layers,
        sample_size=config.sample_size,
        patch_size=config.patch_size,
        num_embeds_ada_norm=NUM_CLASSES,
        norm_num_groups=1,
    )


def train(
    config: DiTDigitsConfig, progress: Callable[[int, float], None] | None = None
) -> DiTTransformer2DModel:
    """Seeded epsilon-prediction training on the digits train split (diffusers drops 10% of the
    class labels to the null label in train mode, which is what classifier-free guidance needs)."""
    images, labels = load_digits_images(config.sample_size)
    train_idx, _ = split_indices(len(images))
    images, labels = images[train_idx], labels[train_idx]

    def make_batch(generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        pick = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        return augment(images[pick], generator), {"class_labels": labels[pick]}

    return train_eps_model(lambda: build_transformer(config), make_batch, DiffusionTraining.from_config(config), progress)


def sample(
    transformer: DiTTransformer2DModel,
    config: DiTDigitsConfig,
    class_labels: torch.Tensor,
    num_steps: int = 20,
    guidance_scale: float = 3.0,
    seed: int = 0,
    step_callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Class-conditional samples in [-1, 1] with classifier-free guidance (DPM-Solver).

    Works for any class-conditional ``DiTTransformer2DModel``: the image shape and the null label
    come from its config; ``config`` supplies the noise schedule.
    """
    arch = transformer.config
    shape = (len(class_labels), arch.in_channels, arch.sample_size, arch.sample_size)
    null = torch.full_like(class_labels, arch.num_embeds_ada_norm)  # the extra label diffusers adds for CFG
    scheduler = sampling_scheduler(config.num_train_timesteps, config.beta_schedule)
    return sample_with_guidance(transformer, scheduler, shape, {"class_labels": class_labels},
                                {"class_labels": null}, num_steps, guidance_scale, seed, step_callback)
