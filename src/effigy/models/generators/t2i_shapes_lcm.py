"""``t2i-shapes-lcm``: the shapes text-to-image model distilled into a 1-4 step student by latent-consistency
distillation (LCM, Luo et al. 2023, https://arxiv.org/abs/2310.04378), the few-step model MixDQ quantizes.

The student starts as a copy of the ``t2i-shapes`` teacher and keeps its architecture; classifier-free
guidance is baked in at the teacher's scale, so sampling runs one branch (half the teacher's batch) with
diffusers' ``LCMScheduler``. Training is resumable (:mod:`effigy.models.training_state`).
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from diffusers import LCMScheduler
from torch import nn

from effigy.errors import ModelError
from effigy.models.generators import lcm, t2i_shapes
from effigy.models.generators.diffusion import train_scheduler
from effigy.models.training_state import resumable_steps
from effigy.worlds.shapes import ShapesWorld, render

log = logging.getLogger(__name__)
MAX_STEPS = 8


@dataclass
class T2IShapesLCMConfig(t2i_shapes.T2IShapesConfig):
    """The teacher's architecture and schedule fields (inherited, checked against the teacher at training)
    plus the distillation's own.

    ``ema_decay`` is the target network's (LCM's 0.95: the target follows the student closely); the shipped
    weights are that target network. ``guidance_scale`` is the teacher's sampling default.

    ``train_steps`` 600, not more: with the same settings over 3000 steps the student kept improving at one
    step but lost adherence at four (docs/notes/mixdq.md has both runs), and MixDQ quantizes it at four."""

    teacher: str = "t2i-shapes"
    train_steps: int = 600
    batch_size: int = 32
    learning_rate: float = 5e-5
    ema_decay: float = 0.95
    guidance_scale: float = 4.0
    num_ddim_timesteps: int = 50
    huber_c: float = 0.001
    warmup_steps: int = 100
    checkpoint_every: int = 100


ARCHITECTURE_FIELDS = ("sample_size", "world_size", "patch_size", "num_layers", "num_attention_heads",
                       "attention_head_dim", "pooled_text", "num_train_timesteps", "beta_schedule", "prediction_type")


def build_transformer(config: T2IShapesLCMConfig) -> nn.Module:
    return t2i_shapes.build_transformer(config)


def student_config(teacher_config: t2i_shapes.T2IShapesConfig, **overrides) -> T2IShapesLCMConfig:
    """The distillation config whose architecture is the teacher's."""
    return T2IShapesLCMConfig(**{name: getattr(teacher_config, name) for name in ARCHITECTURE_FIELDS}, **overrides)


def check_teacher(config: T2IShapesLCMConfig, teacher_config: t2i_shapes.T2IShapesConfig) -> None:
    differing = [n for n in ARCHITECTURE_FIELDS if getattr(config, n) != getattr(teacher_config, n)]
    if differing:
        raise ModelError(f"the student's {', '.join(differing)} differ from teacher {config.teacher!r}'s; the "
                         "student must keep the teacher's architecture and schedule.")


class ConsistencyDistillation:
    """One LCM training step: teacher DDIM step with guidance from a noised training image, EMA target at the
    earlier grid point, pseudo-Huber loss between the student's and the target's consistency outputs."""

    def __init__(self, teacher: nn.Module, config: T2IShapesLCMConfig) -> None:
        self.teacher = teacher.eval().requires_grad_(False)
        self.config = config
        self.noise_schedule = train_scheduler(config.num_train_timesteps, config.beta_schedule, config.prediction_type)
        self.alphas_cumprod = self.noise_schedule.alphas_cumprod
        self.grid = lcm.solver_grid(config.num_train_timesteps, config.num_ddim_timesteps)
        self.skip = config.num_train_timesteps // config.num_ddim_timesteps

    def origin(self, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return lcm.consistency_output(output, t, x, self.alphas_cumprod, self.config.prediction_type)

    @torch.no_grad()
    def teacher_step(self, x_start: torch.Tensor, start: torch.Tensor, previous: torch.Tensor,
                     cond: dict, uncond: dict) -> torch.Tensor:
        """The guided teacher's DDIM point at ``previous`` on the trajectory through ``x_start``."""
        both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
        out = self.teacher(torch.cat([x_start, x_start]), timestep=torch.cat([start, start]), **both).sample
        out_cond, out_uncond = out.chunk(2)
        guided = out_uncond + self.config.guidance_scale * (out_cond - out_uncond)
        x0 = lcm.predicted_origin(guided, start, x_start, self.alphas_cumprod, self.config.prediction_type).clamp(-1, 1)
        eps = lcm.noise_from_origin(x_start, x0, start, self.alphas_cumprod)
        return lcm.ddim_step(x0, eps, previous, self.alphas_cumprod)

    def loss(self, student: nn.Module, target_net: nn.Module, clean: torch.Tensor, cond: dict, uncond: dict,
             generator: torch.Generator) -> torch.Tensor:
        index = torch.randint(0, len(self.grid), (len(clean),), generator=generator)
        start = self.grid[index]
        previous = (start - self.skip).clamp_min(0)
        noise = torch.randn(clean.shape, generator=generator)
        x_start = self.noise_schedule.add_noise(clean, noise, start)
        x_previous = self.teacher_step(x_start, start, previous, cond, uncond)
        with torch.no_grad():
            target = self.origin(target_net(x_previous, timestep=previous, **cond).sample, previous, x_previous)
        prediction = self.origin(student(x_start, timestep=start, **cond).sample, start, x_start)
        return lcm.pseudo_huber(prediction, target, self.config.huber_c)


def train(config: T2IShapesLCMConfig, progress: Callable[[int, float], None] | None = None,
          checkpoint_dir: Path | None = None, teacher: nn.Module | None = None,
          teacher_config: t2i_shapes.T2IShapesConfig | None = None, encoder=None) -> nn.Module:
    """Seeded, resumable distillation on the teacher's training-split scenes; returns the target network.

    Args:
        config: the distillation settings (architecture fields must match the teacher's).
        progress: called with (step, loss) after every step.
        checkpoint_dir: where the resumable state is kept (every ``checkpoint_every`` steps); None keeps none.
        teacher, teacher_config, encoder: for tests; by default the shipped ``t2i-shapes`` and all-MiniLM-L6-v2.
    Returns:
        The student's EMA target network, in eval mode.
    """
    from effigy.models.encoders.text_encoder import MiniLMTextEncoder
    from effigy.models.zoo import load_zoo_model

    if teacher is None:
        teacher, teacher_config = load_zoo_model(config.teacher)
    check_teacher(config, teacher_config)
    bank = t2i_shapes.CaptionBank(encoder or MiniLMTextEncoder())
    scenes = ShapesWorld(size=config.world_size, seed=config.seed).sample(config.train_scenes)
    images = t2i_shapes.resize(t2i_shapes.images_to_tensor([render(s, config.world_size) for s in scenes]),
                               config.sample_size)
    captions = [s.caption for s in scenes]
    bank.encode(captions + [""])

    torch.manual_seed(config.seed)
    student = copy.deepcopy(teacher).train().requires_grad_(True)
    target_net = copy.deepcopy(teacher).eval().requires_grad_(False)
    distill = ConsistencyDistillation(teacher, config)
    optimizer = torch.optim.AdamW(student.parameters(), lr=config.learning_rate, weight_decay=0.0)
    generator = torch.Generator().manual_seed(config.seed)
    modules = {"student": student, "target": target_net}
    uncond = bank.encode([""] * config.batch_size)
    for step in resumable_steps(checkpoint_dir, modules, optimizer, generator, asdict(config), config.train_steps,
                                config.checkpoint_every):
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * _lr_factor(step, config)
        pick = torch.randint(0, len(images), (config.batch_size,), generator=generator).tolist()
        loss = distill.loss(student, target_net, images[pick], bank.encode([captions[i] for i in pick]), uncond,
                            generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        optimizer.step()
        _update_target(target_net, student, config.ema_decay)
        if progress is not None:
            progress(step, loss.item())
    return target_net.eval()


def _lr_factor(step: int, config: T2IShapesLCMConfig) -> float:
    warm = min(1.0, (step + 1) / config.warmup_steps)
    return warm * 0.5 * (1 + math.cos(math.pi * step / config.train_steps))


@torch.no_grad()
def _update_target(target: nn.Module, student: nn.Module, decay: float) -> None:
    for ours, theirs in zip(target.state_dict().values(), student.state_dict().values()):
        ours.mul_(decay).add_(theirs.detach(), alpha=1 - decay)


def lcm_scheduler(config: T2IShapesLCMConfig) -> LCMScheduler:
    """diffusers' LCMScheduler on the student's schedule and grid, clipping x0 to the image range."""
    return LCMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                        prediction_type=config.prediction_type, original_inference_steps=config.num_ddim_timesteps,
                        clip_sample=True, timestep_scaling=lcm.TIMESTEP_SCALING)


@torch.no_grad()
def sample(transformer: nn.Module, config: T2IShapesLCMConfig, bank: t2i_shapes.CaptionBank, captions: list[str],
           num_steps: int = 4, seed: int = 0, step_callback: Callable[[int], None] | None = None) -> torch.Tensor:
    """Images in [-1, 1] at the world's size, 1..8 LCM steps, one branch (guidance is in the weights)."""
    if not 1 <= num_steps <= MAX_STEPS:
        raise ModelError(f"num_steps={num_steps}: the few-step student samples with 1 to {MAX_STEPS} steps.")
    arch = transformer.config
    scheduler = lcm_scheduler(config)
    scheduler.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn((len(captions), arch.in_channels, arch.sample_size, arch.sample_size), generator=generator)
    cond = bank.encode(captions)
    for i, t in enumerate(scheduler.timesteps):
        output = transformer(latents, timestep=t.expand(len(captions)), **cond).sample
        latents = scheduler.step(output, t, latents, generator=generator).prev_sample
        if step_callback is not None:
            step_callback(i)
    return t2i_shapes.resize(latents, config.world_size).clamp(-1, 1)
