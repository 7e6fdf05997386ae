"""The diffusion loop's two prediction targets: what training teaches must be what sampling reads."""
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from effigy.errors import ModelError
from effigy.models.generators.diffusion import (
    sample_with_guidance,
    sampling_scheduler,
    train_scheduler,
    training_target,
)

SCHEDULE = (1000, "squaredcos_cap_v2")


class OracleDenoiser(nn.Module):
    """Knows the one clean image and outputs the exact target (noise or v) for any noisy input."""

    def __init__(self, clean: torch.Tensor, prediction_type: str) -> None:
        super().__init__()
        self.clean = clean
        self.scheduler = train_scheduler(*SCHEDULE, prediction_type)

    def forward(self, noisy: torch.Tensor, timestep: torch.Tensor, **_cond) -> SimpleNamespace:
        alpha_bar = self.scheduler.alphas_cumprod[timestep.long()].view(-1, 1, 1, 1)
        clean = self.clean.expand_as(noisy)
        noise = (noisy - alpha_bar.sqrt() * clean) / (1 - alpha_bar).sqrt()
        return SimpleNamespace(sample=training_target(self.scheduler, clean, noise, timestep.long()))


def _sample(model: nn.Module, sampling_type: str) -> torch.Tensor:
    cond = {"class_labels": torch.zeros(2, dtype=torch.long)}
    return sample_with_guidance(model, sampling_scheduler(*SCHEDULE, sampling_type), (2, 3, 8, 8), cond, cond,
                                num_steps=2, guidance_scale=3.0, seed=0)


def test_v_target_is_the_published_velocity():
    scheduler = train_scheduler(*SCHEDULE, "v_prediction")
    clean, noise, t = torch.rand(4, 3, 8, 8) * 2 - 1, torch.randn(4, 3, 8, 8), torch.tensor([0, 300, 700, 999])
    alpha_bar = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * clean
    torch.testing.assert_close(training_target(scheduler, clean, noise, t), expected)
    assert torch.equal(training_target(train_scheduler(*SCHEDULE), clean, noise, t), noise)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_sampler_reads_the_target_the_model_was_trained_on(prediction_type):
    clean = torch.linspace(-0.8, 0.8, 3 * 8 * 8).view(1, 3, 8, 8)
    oracle = OracleDenoiser(clean, prediction_type)
    torch.testing.assert_close(_sample(oracle, prediction_type), clean.expand(2, -1, -1, -1), atol=1e-3, rtol=0)
    wrong = "epsilon" if prediction_type == "v_prediction" else "v_prediction"
    assert (_sample(oracle, wrong) - clean).abs().mean() > 0.1  # two steps: a mismatch is not hidden by later steps


def test_unknown_prediction_type_is_refused_with_the_choices():
    with pytest.raises(ModelError, match="epsilon, v_prediction"):
        sampling_scheduler(*SCHEDULE, "sample")


def test_t2i_records_without_a_prediction_type_are_read_as_the_epsilon_models_they_hold():
    from effigy.models.generators.t2i_shapes import T2IShapesConfig

    assert T2IShapesConfig.from_dict({"train_steps": 10}).prediction_type == "epsilon"
    assert T2IShapesConfig.from_dict(T2IShapesConfig().to_dict()).prediction_type == "v_prediction"
