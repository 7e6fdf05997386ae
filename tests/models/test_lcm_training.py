"""LCM distillation on a tiny teacher: the target is the teacher's DDIM point on the true trajectory, the
consistency loss vanishes for an exact model, training resumes to the same weights, and the student samples
with diffusers' LCMScheduler."""
import pytest
import torch
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from effigy.errors import CheckpointError, ModelError
from effigy.models.generators import lcm, t2i_shapes, t2i_shapes_lcm
from tests.models.test_t2i_parts import RandomTextEncoder

ARCH = dict(num_layers=1, num_attention_heads=2, attention_head_dim=8)


class ExactModel(nn.Module):
    """Predicts the exact v of a trajectory that ends at ``origin``: the model every consistency model
    should agree with."""

    def __init__(self, origin: torch.Tensor, alphas_cumprod: torch.Tensor) -> None:
        super().__init__()
        self.origin, self.alphas_cumprod = origin, alphas_cumprod

    def forward(self, x, timestep, **_conditioning):
        a = self.alphas_cumprod[timestep].sqrt().view(-1, 1, 1, 1)
        s = (1 - self.alphas_cumprod[timestep]).sqrt().view(-1, 1, 1, 1)
        origin = self.origin.repeat(len(x) // len(self.origin), 1, 1, 1)  # the [cond; uncond] batch too
        eps = (x - a * origin) / s
        return Transformer2DModelOutput(sample=a * eps - s * origin)


def exact_setup():
    config = t2i_shapes_lcm.T2IShapesLCMConfig(**ARCH, guidance_scale=4.0)
    distill = t2i_shapes_lcm.ConsistencyDistillation(nn.Identity(), config)
    origin = torch.rand(3, 3, 4, 4) * 1.6 - 0.8
    model = ExactModel(origin, distill.alphas_cumprod)
    distill.teacher = model
    return config, distill, model, origin


def test_teacher_step_lands_on_the_true_trajectory_one_grid_step_earlier():
    _, distill, _, origin = exact_setup()
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(origin.shape, generator=g)
    start = torch.tensor([999, 519, 19])
    previous = (start - distill.skip).clamp_min(0)
    x_start = distill.noise_schedule.add_noise(origin, noise, start)
    cond = {"encoder_hidden_states": torch.zeros(3, 2, 4)}
    x_previous = distill.teacher_step(x_start, start, previous, cond, cond)  # cond == uncond: guidance is a no-op
    expected = distill.noise_schedule.add_noise(origin, noise, previous)
    torch.testing.assert_close(x_previous, expected, atol=2e-4, rtol=1e-4)
    assert distill.skip == 20 and distill.grid[0] == 19 and distill.grid[-1] == 999


def test_the_consistency_loss_vanishes_for_an_exact_model_and_not_for_a_wrong_one():
    _, distill, model, origin = exact_setup()
    cond = {"encoder_hidden_states": torch.zeros(3, 2, 4)}
    g = torch.Generator().manual_seed(1)
    loss = distill.loss(model, model, origin, cond, cond, g)
    assert loss.item() < 1e-3
    wrong = ExactModel(origin.flip(0), distill.alphas_cumprod)  # another trajectory's origin
    assert distill.loss(wrong, model, origin, cond, cond, torch.Generator().manual_seed(1)).item() > 0.05


def test_the_consistency_output_is_the_sample_itself_at_the_origin():
    _, distill, model, origin = exact_setup()
    x0 = origin + 0.01
    zero = torch.zeros(3, dtype=torch.long)
    torch.testing.assert_close(distill.origin(model(x0, zero).sample, zero, x0), x0)


def tiny_teacher():
    teacher_config = t2i_shapes.T2IShapesConfig(**ARCH)
    torch.manual_seed(0)
    return t2i_shapes.build_transformer(teacher_config).eval(), teacher_config


def tiny_distillation(**overrides):
    return t2i_shapes_lcm.T2IShapesLCMConfig(**ARCH, train_steps=4, batch_size=3, train_scenes=12,
                                             checkpoint_every=2, warmup_steps=2, **overrides)


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path):
    teacher, teacher_config = tiny_teacher()
    config = tiny_distillation()
    kwargs = dict(teacher=teacher, teacher_config=teacher_config, encoder=RandomTextEncoder())
    straight = t2i_shapes_lcm.train(config, **kwargs)

    def interrupt(step, _loss):
        if step == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        t2i_shapes_lcm.train(config, interrupt, checkpoint_dir=tmp_path, **kwargs)
    steps_run = []
    resumed = t2i_shapes_lcm.train(config, lambda s, _l: steps_run.append(s), checkpoint_dir=tmp_path, **kwargs)
    assert steps_run == [2, 3]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(straight.state_dict().values(), teacher.state_dict().values()))

    with pytest.raises(CheckpointError, match="another config"):
        t2i_shapes_lcm.train(tiny_distillation(learning_rate=1e-3), checkpoint_dir=tmp_path, **kwargs)


def test_the_student_must_keep_the_teachers_architecture():
    teacher, teacher_config = tiny_teacher()
    config = t2i_shapes_lcm.T2IShapesLCMConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8)
    with pytest.raises(ModelError, match="num_layers"):
        t2i_shapes_lcm.train(config, teacher=teacher, teacher_config=teacher_config, encoder=RandomTextEncoder())


def test_the_student_samples_with_diffusers_lcm_scheduler_at_one_to_eight_steps():
    teacher, _ = tiny_teacher()
    config = tiny_distillation()
    bank = t2i_shapes.CaptionBank(RandomTextEncoder())
    seen = []
    images = t2i_shapes_lcm.sample(teacher, config, bank, ["a red circle", "a blue square"], 4, seed=0,
                                   step_callback=seen.append)
    assert images.shape == (2, 3, config.world_size, config.world_size) and seen == [0, 1, 2, 3]
    assert images.abs().max() <= 1
    assert t2i_shapes_lcm.lcm_scheduler(config).config.original_inference_steps == config.num_ddim_timesteps
    for bad in (0, 9):
        with pytest.raises(ModelError, match="1 to 8"):
            t2i_shapes_lcm.sample(teacher, config, bank, ["a red circle"], bad)


def test_pseudo_huber_is_l2_near_zero_and_l1_far():
    small, large = torch.tensor([1e-4]), torch.tensor([10.0])
    zero = torch.zeros(1)
    c = 1e-3
    assert lcm.pseudo_huber(small, zero, c).item() == pytest.approx(small.item() ** 2 / (2 * c), rel=1e-2)
    assert lcm.pseudo_huber(large, zero, c).item() == pytest.approx(10.0, rel=1e-3)
