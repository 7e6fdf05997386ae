"""The diffusion loop every shipped generator shares: epsilon- or v-prediction training with EMA weights,
and classifier-free-guided sampling with a diffusers scheduler.

A model plugs in through two callables, so the digits DiT (class labels) and the shapes
text-to-image model (caption embeddings) train and sample through the same code.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from torch import nn

from effigy.errors import ModelError

# make_batch(generator) -> (clean images, conditioning kwargs for the model's forward)
BatchMaker = Callable[[torch.Generator], tuple[torch.Tensor, dict]]


@dataclass
class DiffusionTraining:
    train_steps: int
    batch_size: int
    learning_rate: float
    ema_decay: float
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    warmup_steps: int = 100
    seed: int = 0

    @classmethod
    def from_config(cls, config: object) -> "DiffusionTraining":
        """Read the fields of the same names from a model's training config."""
        return cls(**{name: getattr(config, name) for name in cls.__dataclass_fields__ if hasattr(config, name)})


PREDICTION_TYPES = ("epsilon", "v_prediction")


def train_scheduler(num_train_timesteps: int, beta_schedule: str, prediction_type: str = "epsilon") -> DDPMScheduler:
    _check_prediction_type(prediction_type)
    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         prediction_type=prediction_type)


# the samplers a shipped generator can run: diffusers schedulers over the training schedule; the x0-predicting
# multistep ones with dynamic thresholding (see sampling_scheduler), Euler on its sigma ladder without
SAMPLERS = {
    "dpm-solver++": lambda **kw: DPMSolverMultistepScheduler(**kw, thresholding=True, sample_max_value=1.0),
    "ddim": lambda **kw: DDIMScheduler(**kw, thresholding=True, sample_max_value=1.0),
    "unipc": lambda **kw: UniPCMultistepScheduler(**kw, thresholding=True, sample_max_value=1.0),
    "euler": lambda **kw: EulerDiscreteScheduler(**kw),
}


def sampling_scheduler(num_train_timesteps: int, beta_schedule: str, prediction_type: str = "epsilon",
                       sampler: str = "dpm-solver++"):
    """DPM-Solver++ with dynamic thresholding by default, the usual choice for pixel-space models: with the
    cosine schedule the first step sees alpha_bar ~ 0, and an epsilon model's x0 estimate there explodes
    without thresholding (a v-prediction model predicts x0 itself at that step, which is why it is
    the better target for this schedule). ``sampler`` picks another of :data:`SAMPLERS`."""
    _check_prediction_type(prediction_type)
    if sampler not in SAMPLERS:
        raise ModelError(f"sampler={sampler!r} is unknown: choose one of {', '.join(SAMPLERS)}.")
    return SAMPLERS[sampler](num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                             prediction_type=prediction_type)


def _check_prediction_type(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ModelError(f"prediction_type={prediction_type!r}: use one of {', '.join(PREDICTION_TYPES)}.")


def training_target(scheduler: DDPMScheduler, clean: torch.Tensor, noise: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
    """What the network learns to output: the noise, or v = sqrt(a) * noise - sqrt(1 - a) * clean."""
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(clean, noise, t)
    return noise


def train_eps_model(
    build: Callable[[], nn.Module], make_batch: BatchMaker, settings: DiffusionTraining,
    progress: Callable[[int, float], None] | None = None,
) -> nn.Module:
    """Seeded AdamW training with warmup + cosine decay on the scheduler's target (epsilon or v);
    returns the model holding its EMA weights.

    The model is built after seeding, so its initial weights are part of what the seed fixes.
    """
    torch.manual_seed(settings.seed)
    model = build()
    generator = torch.Generator().manual_seed(settings.seed)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    scheduler = train_scheduler(settings.num_train_timesteps, settings.beta_schedule, settings.prediction_type)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=0.0)

    def lr_at(step: int) -> float:
        warm = min(1.0, (step + 1) / settings.warmup_steps)
        return warm * 0.5 * (1 + math.cos(math.pi * step / settings.train_steps))

    lr_schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    model.train()
    for step in range(settings.train_steps):
        clean, cond = make_batch(generator)
        noise = torch.randn(clean.shape, generator=generator)
        t = torch.randint(0, settings.num_train_timesteps, (len(clean),), generator=generator)
        pred = model(scheduler.add_noise(clean, noise, t), timestep=t, **cond).sample
        loss = F.mse_loss(pred, training_target(scheduler, clean, noise, t))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        lr_schedule.step()
        _update_ema(ema, model, settings.ema_decay if step >= settings.warmup_steps else 0.0)
        if progress is not None:
            progress(step, loss.item())
    model.load_state_dict(ema)
    return model.eval()


@torch.no_grad()
def _update_ema(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """Exponential moving average of the weights: what diffusion models are sampled with."""
    for name, value in model.state_dict().items():
        ema[name].mul_(decay).add_(value.detach(), alpha=1 - decay)


@torch.no_grad()
def sample_with_guidance(
    model: nn.Module,
    scheduler: DPMSolverMultistepScheduler,
    shape: tuple[int, ...],
    cond: dict,
    uncond: dict,
    num_steps: int,
    guidance_scale: float,
    seed: int,
    step_callback: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Classifier-free guidance with both branches in one batch ``[cond; uncond]``, as real DiT
    pipelines run them (so per-token activation quantization sees each branch separately).

    ``cond`` / ``uncond`` hold batch-first tensors for the model's forward; they are concatenated.
    """
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
    both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
    n = shape[0]
    for i, t in enumerate(scheduler.timesteps):
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        eps = model(model_in, timestep=t.expand(2 * n), **both).sample
        eps_cond, eps_uncond = eps.chunk(2)
        latents = scheduler.step(eps_uncond + guidance_scale * (eps_cond - eps_uncond), t, latents).prev_sample
        if step_callback is not None:
            step_callback(i)
    return latents.clamp(-1, 1)
