"""A class-conditional DiT (diffusers ``DiTTransformer2DModel``) trained on scikit-learn digits.

No DiT weights exist offline, so effigy trains its own on CPU with a seeded command and ships them.
Everything a user would touch is stock diffusers: the transformer class, the DDPM training
schedule and the DPM-Solver sampler, so a method that works here works on a real DiT pipeline.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, DiTTransformer2DModel, DPMSolverMultistepScheduler

from effigy.worlds.digits import NUM_CLASSES, augment, load_digits_images, split_indices


@dataclass
class DiTDigitsConfig:
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DiTDigitsConfig":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


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


def train_scheduler(config: DiTDigitsConfig) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule)


def sampling_scheduler(config: DiTDigitsConfig) -> DPMSolverMultistepScheduler:
    return DPMSolverMultistepScheduler(
        num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule
    )


def train(
    config: DiTDigitsConfig, progress: Callable[[int, float], None] | None = None
) -> DiTTransformer2DModel:
    """Seeded epsilon-prediction training on the digits train split (class labels dropped 10% for CFG)."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    images, labels = load_digits_images(config.sample_size)
    train_idx, _ = split_indices(len(images))
    images, labels = images[train_idx], labels[train_idx]
    model = build_transformer(config)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scheduler = train_scheduler(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.0)
    warmup = 100
    lr_at = lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * step / config.train_steps))
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    for step in range(config.train_steps):
        pick = torch.randint(0, len(images), (config.batch_size,), generator=generator)
        clean = augment(images[pick], generator)
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(0, config.num_train_timesteps, (config.batch_size,), generator=generator)
        noisy = scheduler.add_noise(clean, noise, t)
        pred = model(noisy, timestep=t, class_labels=labels[pick]).sample
        loss = F.mse_loss(pred, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        _update_ema(ema, model, config.ema_decay if step >= warmup else 0.0)
        if progress is not None:
            progress(step, loss.item())
    model.load_state_dict(ema)
    return model.eval()


@torch.no_grad()
def _update_ema(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    """Exponential moving average of the weights: what diffusion models are sampled with."""
    for name, value in model.state_dict().items():
        ema[name].mul_(decay).add_(value.detach(), alpha=1 - decay)


@torch.no_grad()
def sample(
    transformer: DiTTransformer2DModel,
    config: DiTDigitsConfig,
    class_labels: torch.Tensor,
    num_steps: int = 20,
    guidance_scale: float = 3.0,
    seed: int = 0,
    step_callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Class-conditional samples in [-1, 1] with classifier-free guidance.

    Works for any class-conditional ``DiTTransformer2DModel`` (shape and null label come from its
    config); ``config`` supplies the noise schedule. The conditional and unconditional branches run as one batch ``[cond; uncond]``, the layout real
    DiT pipelines use, so per-token activation quantization sees both branches separately.
    """
    scheduler = sampling_scheduler(config)
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    n = len(class_labels)
    arch = transformer.config
    shape = (n, arch.in_channels, arch.sample_size, arch.sample_size)
    latents = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    null = torch.full_like(class_labels, arch.num_embeds_ada_norm)  # the extra CFG label
    labels_in = torch.cat([class_labels, null])
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps = transformer(model_in, timestep=t.expand(2 * n), class_labels=labels_in).sample
        eps_cond, eps_uncond = eps.chunk(2)
        eps = eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        latents = scheduler.step(eps, t, latents).prev_sample
        if step_callback is not None:
            step_callback(i)
    return latents.clamp(-1, 1)
