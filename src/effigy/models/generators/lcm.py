"""Latent-consistency distillation pieces (LCM, https://arxiv.org/abs/2310.04378), for MixDQ's few-step
student of the shapes model (issue 22, part 1): the boundary condition, the consistency output and the
distillation target, matched to diffusers' ``LCMScheduler`` so that a student trained on them is sampled by
that scheduler unchanged. The training loop is in :mod:`effigy.models.generators.t2i_shapes_lcm`.

The student ``f(x_t, t)`` predicts the trajectory's origin through ``c_skip(t) x_t + c_out(t) x0_pred``;
``c_skip(0) = 1`` and ``c_out(0) = 0`` make it the identity at t = 0. The target at ``t`` is the EMA
student's output at the point one teacher solver step (DDIM, classifier-free guided) earlier on a coarse
timestep grid.
"""
from __future__ import annotations

import torch

SIGMA_DATA = 0.5  # diffusers' LCMScheduler
TIMESTEP_SCALING = 10.0


def boundary_scalings(timesteps: torch.Tensor, timestep_scaling: float = TIMESTEP_SCALING
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out) per timestep, as ``LCMScheduler.get_scalings_for_boundary_condition_discrete``."""
    scaled = timesteps.float() * timestep_scaling
    c_skip = SIGMA_DATA ** 2 / (scaled ** 2 + SIGMA_DATA ** 2)
    c_out = scaled / (scaled ** 2 + SIGMA_DATA ** 2) ** 0.5
    return c_skip, c_out


def predicted_origin(model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor,
                     alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """x0 from a noise ("epsilon") or velocity ("v_prediction") output at ``timesteps``."""
    alpha = alphas_cumprod[timesteps].float().sqrt().view(-1, *([1] * (sample.dim() - 1)))
    sigma = (1 - alphas_cumprod[timesteps].float()).sqrt().view_as(alpha)
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output
    raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")


def consistency_output(model_output: torch.Tensor, timesteps: torch.Tensor, sample: torch.Tensor,
                       alphas_cumprod: torch.Tensor, prediction_type: str) -> torch.Tensor:
    """The student's estimate of the trajectory's origin under the boundary condition."""
    c_skip, c_out = (c.view(-1, *([1] * (sample.dim() - 1))) for c in boundary_scalings(timesteps))
    x0 = predicted_origin(model_output, timesteps, sample, alphas_cumprod, prediction_type)
    return c_skip * sample + c_out * x0


def ddim_step(x0: torch.Tensor, eps: torch.Tensor, timesteps_prev: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The DDIM point at ``timesteps_prev`` on the trajectory through (x0, eps)."""
    alpha = alphas_cumprod[timesteps_prev].float().sqrt().view(-1, *([1] * (x0.dim() - 1)))
    sigma = (1 - alphas_cumprod[timesteps_prev].float()).sqrt().view_as(alpha)
    return alpha * x0 + sigma * eps


def noise_from_origin(sample: torch.Tensor, x0: torch.Tensor, timesteps: torch.Tensor,
                      alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The noise that puts ``x0`` at ``sample`` at ``timesteps``: re-derived after x0 is clipped to the
    image range, as diffusers' DDIM does with ``clip_sample``, so the solver step stays on one trajectory."""
    alpha = alphas_cumprod[timesteps].float().sqrt().view(-1, *([1] * (sample.dim() - 1)))
    sigma = (1 - alphas_cumprod[timesteps].float()).sqrt().view_as(alpha)
    return (sample - alpha * x0) / sigma


def solver_grid(num_train_timesteps: int, num_ddim_timesteps: int) -> torch.Tensor:
    """The coarse timestep grid (19, 39, ..., 999 for 1000 / 50): the points ``LCMScheduler`` samples at,
    as its ``original_inference_steps`` picks them."""
    ratio = num_train_timesteps // num_ddim_timesteps
    return torch.arange(1, num_ddim_timesteps + 1) * ratio - 1


def pseudo_huber(prediction: torch.Tensor, target: torch.Tensor, c: float) -> torch.Tensor:
    """LCM's loss: sqrt(d^2 + c^2) - c per element, averaged; L2 near zero, L1 for large errors."""
    return ((prediction.float() - target.float()).pow(2) + c * c).sqrt().sub(c).mean()
