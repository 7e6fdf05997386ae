"""A PixArt-style text-to-image transformer (diffusers ``PixArtTransformer2DModel``) for the shapes world.

It cross-attends to frozen all-MiniLM-L6-v2 token embeddings (the [CLS]/BOS token included), is
trained on CPU by a seeded command, and samples with DPM-Solver and classifier-free guidance, where
the unconditional branch is the embedding of the empty caption.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import PixArtTransformer2DModel
from diffusers.models.embeddings import PixArtAlphaTextProjection

from effigy.errors import ModelError
from effigy.models.config import TrainConfig
from effigy.models.encoders.text_encoder import EMBED_DIM
from effigy.models.generators.diffusion import (
    DiffusionTraining,
    sample_with_guidance,
    sampling_scheduler,
    train_eps_model,
)
from effigy.worlds.shapes import ShapesWorld, render


@dataclass
class T2IShapesConfig(TrainConfig):
    """The model generates at ``sample_size`` (16x16, patch 2: 64 tokens, what CPU training affords and
    what made the digits DiT work; 32x32 with patch 4 gave incoherent patch-sized blobs). Training
    images are 32x32 world renders averaged down; samples are upsampled back to ``world_size`` so the
    judges (trained at 32x32, and reading 16->32 renders equally well) score them as world images.

    v-prediction, not epsilon: with the cosine schedule the noisiest steps have alpha_bar ~ 0, where an
    epsilon model's image estimate is ill-posed (it drew soft, speckled blobs and held-out single-object
    adherence stayed at 0.65 after 8000 steps); a v model predicts the image itself there."""

    sample_size: int = 16
    world_size: int = 32
    patch_size: int = 2
    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    train_steps: int = 8000
    batch_size: int = 48
    learning_rate: float = 6e-4
    ema_decay: float = 0.999
    caption_dropout: float = 0.1
    pooled_text: bool = True  # add the pooled caption to the adaLN-single conditioning
    train_scenes: int = 20000
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict) -> "T2IShapesConfig":
        """Manifest records written before ``prediction_type`` existed hold epsilon models: read them so,
        instead of sampling them with the new default."""
        return super().from_dict({"prediction_type": "epsilon", **data})


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the kept token embeddings: all-MiniLM-L6-v2's own sentence embedding (before normalising)."""
    weights = mask.to(tokens.dtype)[..., None]
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1)


class PixArtWithPooledText(PixArtTransformer2DModel):
    """``PixArtTransformer2DModel`` whose adaLN-single conditioning also carries the pooled caption.

    Why: a small PixArt trained on CPU learned to ignore its cross-attention (changing the caption moved
    the noise prediction by ~1%); the digits DiT, conditioned through adaLN, learned its labels at once.
    Adding a projected mean-pooled caption to the timestep embedding (as SD-XL and Stable Audio add pooled
    text) gives the caption a global path, while cross-attention keeps the per-token path that relations
    and BOS-aware quantization rely on. Everything else is diffusers' own forward, so attention
    processors, hooks and ``isinstance(model, PixArtTransformer2DModel)`` keep working.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        inner = self.config.num_attention_heads * self.config.attention_head_dim
        # named *emb* so the default quantization ignore list keeps it in full precision with the other embedders
        self.pooled_caption_embedder = PixArtAlphaTextProjection(self.config.caption_channels, inner, act_fn="silu")
        self._pending_pooled: torch.Tensor | None = None
        self.adaln_single.emb.register_forward_hook(self._add_pooled_caption)

    def _add_pooled_caption(self, module, args, output: torch.Tensor) -> torch.Tensor:
        if self._pending_pooled is None:
            raise ModelError("PixArtWithPooledText: the timestep embedder ran outside the model's forward.")
        return output + self._pending_pooled.to(output.dtype)

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, *args,
                encoder_attention_mask: torch.Tensor | None = None, **kwargs):
        mask = encoder_attention_mask
        if mask is None:
            mask = torch.ones(encoder_hidden_states.shape[:2], dtype=encoder_hidden_states.dtype)
        self._pending_pooled = self.pooled_caption_embedder(mean_pool(encoder_hidden_states, mask))
        try:
            return super().forward(hidden_states, encoder_hidden_states, *args,
                                   encoder_attention_mask=encoder_attention_mask, **kwargs)
        finally:
            self._pending_pooled = None


# diffusers' from_config reads the accepted config keys from __init__'s signature: give it the parent's
PixArtWithPooledText.__init__.__signature__ = inspect.signature(PixArtTransformer2DModel.__init__)


def build_transformer(config: T2IShapesConfig) -> PixArtTransformer2DModel:
    hidden = config.num_attention_heads * config.attention_head_dim
    model_cls = PixArtWithPooledText if config.pooled_text else PixArtTransformer2DModel
    return model_cls(
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


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Area-average down (anti-aliased training images) or bilinear up (samples shown at world size)."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] > size:
        return F.adaptive_avg_pool2d(images, size)
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)


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
    from effigy.models.encoders.text_encoder import MiniLMTextEncoder

    bank = CaptionBank(encoder or MiniLMTextEncoder())
    scenes = ShapesWorld(size=config.world_size, seed=config.seed).sample(config.train_scenes)
    images = resize(images_to_tensor([render(s, config.world_size) for s in scenes]), config.sample_size)
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
    sampler: str = "dpm-solver++",
) -> torch.Tensor:
    """Images in [-1, 1] at the world's size for ``captions`` (1..50 steps), CFG against the empty caption;
    ``sampler``: one of ``diffusion.SAMPLERS``."""
    if not 1 <= num_steps <= 50:
        raise ModelError(f"num_steps={num_steps}: the shapes model samples with 1 to 50 steps.")
    arch = transformer.config
    shape = (len(captions), arch.in_channels, arch.sample_size, arch.sample_size)
    scheduler = sampling_scheduler(config.num_train_timesteps, config.beta_schedule, config.prediction_type, sampler)
    images = sample_with_guidance(transformer, scheduler, shape, bank.encode(captions),
                                  bank.encode([""] * len(captions)), num_steps, guidance_scale, seed, step_callback)
    return resize(images, config.world_size).clamp(-1, 1)
