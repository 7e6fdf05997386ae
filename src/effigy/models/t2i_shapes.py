"""A PixArt-style text-to-image transformer (diffusers ``PixArtTransformer2DModel``) for the shapes world.

It cross-attends to frozen all-MiniLM-L6-v2 token embeddings (the [CLS]/BOS token included), is
trained on CPU by a seeded command, and samples with DPM-Solver and classifier-free guidance, where
the unconditional branch is the embedding of the empty caption.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from diffusers import PixArtTransformer2DModel

from effigy.models.config import TrainConfig
from effigy.models.diffusion import DiffusionTraining, sample_with_guidance, sampling_scheduler, train_eps_model
from effigy.models.text_encoder import EMBED_DIM
from effigy.worlds.shapes import ShapesWorld, render


@dataclass
class T2IShapesConfig(TrainConfig):
    sample_size: int = 32
    patch_size: int = 4  # 8x8 = 64 tokens: what CPU training affords
    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    train_steps: int = 3000
    batch_size: int = 48
    learning_rate: float = 6e-4
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    train_scenes: int = 20000
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    seed: int = 0


def build_transformer(config: T2IShapesConfig) -> PixArtTransformer2DModel:
    hidden = config.num_attention_heads * config.attention_head_dim
    return PixArtTransformer2DModel(
        num_attention_heads=config.num_attention_heads,
        attention_head_dim=config.attention_head_dim,
        in_channels=3,
        out_channels=3,
        num_layers=config.num_layers,
        cross_attention_dim=hidden,
        sample_size=config.sample_size,
        patch_size=config.patch_size,
        caption_channels=EMBED_DIM,
        norm_num_groups=1,
        use_additional_conditions=False,
    )


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 RGB [H, W, 3] images -> float [N, 3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


class CaptionBank:
    """Text-encoder outputs cached per caption: the world has few distinct captions, and the frozen
    encoder need not run once per training step."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder
        self.cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, captions: list[str]) -> dict:
        missing = sorted({c for c in captions if c not in self.cache})
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            hidden, mask = self.encoder.encode(chunk)
            self.cache.update({c: (hidden[i], mask[i]) for i, c in enumerate(chunk)})
        hidden = torch.stack([self.cache[c][0] for c in captions])
        mask = torch.stack([self.cache[c][1] for c in captions])
        return {"encoder_hidden_states": hidden, "encoder_attention_mask": mask}


def train(config: T2IShapesConfig, progress: Callable[[int, float], None] | None = None,
          encoder=None) -> PixArtTransformer2DModel:
    """Seeded training on ``train_scenes`` rendered training-split scenes (held-out pairs never seen)."""
    from effigy.models.text_encoder import MiniLMTextEncoder

    bank = CaptionBank(encoder or MiniLMTextEncoder())
    scenes = ShapesWorld(size=config.sample_size, seed=config.seed).sample(config.train_scenes)
    images = images_to_tensor([render(s, config.sample_size) for s in scenes])
    captions = [s.caption for s in scenes]
    bank.encode(captions + [""])

    def make_batch(generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        pick = torch.randint(0, len(images), (config.batch_size,), generator=generator).tolist()
        drop = torch.rand(config.batch_size, generator=generator) < config.caption_dropout
        batch_captions = ["" if d else captions[i] for i, d in zip(pick, drop.tolist())]
        return images[pick], bank.encode(batch_captions)

    settings = DiffusionTraining.from_config(config)
    return train_eps_model(lambda: build_transformer(config), make_batch, settings, progress)


def sample(
    transformer: PixArtTransformer2DModel,
    config: T2IShapesConfig,
    bank: CaptionBank,
    captions: list[str],
    num_steps: int = 20,
    guidance_scale: float = 4.0,
    seed: int = 0,
    step_callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Images in [-1, 1] for ``captions`` (1..50 steps), CFG against the empty caption."""
    if not 1 <= num_steps <= 50:
        raise ValueError(f"num_steps={num_steps}: the shapes model samples with 1 to 50 steps.")
    arch = transformer.config
    shape = (len(captions), arch.in_channels, arch.sample_size, arch.sample_size)
    scheduler = sampling_scheduler(config.num_train_timesteps, config.beta_schedule)
    return sample_with_guidance(transformer, scheduler, shape, bank.encode(captions), bank.encode([""] * len(captions)),
                                num_steps, guidance_scale, seed, step_callback)
