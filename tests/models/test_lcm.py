"""LCM distillation pieces: the boundary condition matches diffusers' LCMScheduler, the consistency output is
the identity at t = 0, and a DDIM step of an exact model lands on the same trajectory."""
import pytest
import torch
from diffusers import DDPMScheduler, LCMScheduler

from effigy.models.generators.lcm import boundary_scalings, consistency_output, ddim_step, predicted_origin


def test_boundary_scalings_are_diffusers_lcm_schedulers():
    scheduler = LCMScheduler(num_train_timesteps=1000)
    timesteps = torch.tensor([0, 1, 19, 250, 999])
    c_skip, c_out = boundary_scalings(timesteps)
    for t, skip, out in zip(timesteps.tolist(), c_skip, c_out):
        expected = scheduler.get_scalings_for_boundary_condition_discrete(t)
        assert skip.item() == pytest.approx(float(expected[0]), rel=1e-6)
        assert out.item() == pytest.approx(float(expected[1]), rel=1e-6, abs=1e-9)
    assert c_skip[0] == 1 and c_out[0] == 0  # the identity at the trajectory's origin


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_an_exact_model_recovers_the_origin_and_ddim_stays_on_the_trajectory(prediction_type):
    alphas_cumprod = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(3, 1, 4, 4, generator=g), torch.randn(3, 1, 4, 4, generator=g)
    t = torch.tensor([800, 500, 40])  # (near t = 999 an epsilon model divides by alpha ~ 0: float error, not a bug)
    a = alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    x_t = a * x0 + s * eps
    output = eps if prediction_type == "epsilon" else a * eps - s * x0  # what an exact model predicts
    torch.testing.assert_close(predicted_origin(output, t, x_t, alphas_cumprod, prediction_type), x0, atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(ddim_step(x0, eps, t, alphas_cumprod), x_t)
    zero = torch.zeros(3, dtype=torch.long)
    x_0 = ddim_step(x0, eps, zero, alphas_cumprod)
    torch.testing.assert_close(consistency_output(output, zero, x_0, alphas_cumprod, prediction_type), x_0)
    with pytest.raises(ValueError, match="prediction_type"):
        predicted_origin(output, t, x_t, alphas_cumprod, "sample")
