import pytest
import torch
from torch import nn

from effigy.core import QuantSpec, kernels
from effigy.errors import QuantizationError
from effigy.nn import QuantLinear

W8 = QuantSpec(bits=8, granularity="channel")
A8_TOKEN = QuantSpec(bits=8, granularity="token", dynamic=True)


def make(linear, weight=W8, act=A8_TOKEN, backend="reference"):
    return QuantLinear.from_linear(linear, weight, act, backend=backend)


def test_int_path_matches_reference_path():
    linear = nn.Linear(64, 48)
    x = torch.randn(2, 20, 64) * 3
    reference = make(linear)(x)
    integer = make(linear, backend="int")(x)
    torch.testing.assert_close(integer, reference, rtol=1e-4, atol=1e-4)


def test_fbgemm_path_matches_reference_at_supported_activation_bits():
    bits = kernels.fbgemm_max_activation_bits()
    act = QuantSpec(bits=bits, granularity="token", dynamic=True)
    linear = nn.Linear(64, 48)
    x = torch.randn(30, 64)
    torch.testing.assert_close(make(linear, act=act, backend="fbgemm")(x), make(linear, act=act)(x), rtol=1e-4, atol=1e-4)


def test_static_per_tensor_int_path_matches_reference_with_clipping():
    linear = nn.Linear(32, 16)
    act = QuantSpec(bits=8, granularity="tensor", dynamic=False)
    qparams = (torch.tensor(0.01), torch.tensor(0.0))  # clips inputs beyond 1.27
    x = torch.randn(24, 32)
    ref = QuantLinear.from_linear(linear, W8, act, act_qparams=qparams)(x)
    integer = QuantLinear.from_linear(linear, W8, act, act_qparams=qparams, backend="int")(x)
    torch.testing.assert_close(integer, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_output_close_to_float_and_improves_with_bits(bits):
    linear = nn.Linear(128, 64)
    x = torch.randn(16, 128)
    err = (make(linear, QuantSpec(bits=bits, granularity="channel"), None)(x) - linear(x)).abs().mean()
    assert err < {2: 1.0, 4: 0.08, 8: 0.005}[bits]


def test_weight_bytes_are_packed_bytes_plus_scales_and_bias():
    linear = nn.Linear(64, 32)
    for bits, packed in ((8, 64 * 32), (4, 64 * 32 // 2), (2, 64 * 32 // 4)):
        layer = make(linear, QuantSpec(bits=bits, granularity="channel"), None)
        assert layer.weight_packed.numel() == packed
        assert layer.weight_nbytes() == packed + 32 * 4 + 32 * 4


def test_group_weights_reference_and_divisibility_error():
    linear = nn.Linear(64, 8)
    layer = make(linear, QuantSpec(bits=4, granularity="group", group_size=16), None)
    assert layer.weight_scale.shape == (8, 4, 1)
    assert (layer(torch.randn(3, 64)) - linear(torch.randn(3, 64))).abs().mean() < 10
    with pytest.raises(QuantizationError, match="does not divide in_features=64"):
        make(linear, QuantSpec(bits=4, granularity="group", group_size=48), None)


def test_backend_validation():
    linear = nn.Linear(16, 8)
    with pytest.raises(QuantizationError, match="unknown"):
        make(linear, backend="cuda-magic")
    with pytest.raises(QuantizationError, match="symmetric per-tensor or per-token"):
        make(linear, act=None, backend="int")
    with pytest.raises(QuantizationError, match="groups"):
        make(linear, QuantSpec(bits=4, granularity="group", group_size=8), backend="int")


def test_static_activations_need_calibration():
    with pytest.raises(QuantizationError, match="calib_loop"):
        make(nn.Linear(8, 8), act=QuantSpec(bits=8, granularity="tensor", dynamic=False))


def test_channel_balancing_moves_an_outlier_channel_into_the_weights():
    from effigy.core.quant import channel_balance_divisor

    torch.manual_seed(0)
    linear = torch.nn.Linear(64, 32)
    x = torch.randn(256, 64)
    x[:, 3] *= 40  # one outlier input channel, as in DiT activations
    reference = linear(x)
    w8a4 = (QuantSpec(bits=8, granularity="channel"), QuantSpec(bits=4, granularity="token", dynamic=True))
    plain = QuantLinear.from_linear(linear, *w8a4)
    divisor = channel_balance_divisor(x.abs().amax(0), linear.weight, alpha=0.5)
    balanced = QuantLinear.from_linear(linear, *w8a4, input_divisor=divisor)
    rotated = QuantLinear.from_linear(linear, *w8a4, input_divisor=divisor, rotated=True)
    error = lambda layer: ((layer(x) - reference).norm() / reference.norm()).item()
    assert error(balanced) < 0.6 * error(plain)
    assert error(rotated) < error(plain)
    exact = QuantLinear.from_linear(linear, QuantSpec(bits=8, granularity="channel"), None, input_divisor=divisor,
                                    rotated=True)
    assert torch.allclose(exact(x), reference, rtol=0, atol=0.05 * reference.abs().max().item())


def test_cfg_branches_get_their_own_activation_scales():
    """Per-token dynamic scales: the conditional half of a [cond; uncond] batch is quantized exactly
    as if run alone, whatever the other half holds (a shared per-tensor scale would couple them)."""
    from effigy.nn import QuantLinear

    linear = torch.nn.Linear(16, 8)
    layer = QuantLinear.from_linear(linear, QuantSpec(bits=8, granularity="channel"),
                                    QuantSpec(bits=8, granularity="token", dynamic=True))
    cond = torch.randn(2, 5, 16)
    uncond = 50 * torch.randn(2, 5, 16)  # a branch with a much larger range
    together = layer(torch.cat([cond, uncond]))
    assert torch.equal(together[:2], layer(cond))
    shared = QuantLinear.from_linear(linear, QuantSpec(bits=8, granularity="channel"),
                                     QuantSpec(bits=8, granularity="tensor", dynamic=True))
    assert not torch.allclose(shared(torch.cat([cond, uncond]))[:2], shared(cond))


def _backend_cases():
    act7 = QuantSpec(bits=kernels.fbgemm_max_activation_bits(), granularity="token", dynamic=True)
    w4_group = QuantSpec(bits=4, granularity="group", group_size=64)
    return [("reference", W8, A8_TOKEN), ("int", W8, A8_TOKEN), ("fbgemm", W8, act7),
            ("int", QuantSpec(bits=4, granularity="channel"), A8_TOKEN), ("int4", w4_group, None),
            ("int4", w4_group, A8_TOKEN), ("reference", w4_group, None)]


@pytest.mark.parametrize("backend, weight, act", _backend_cases())
def test_held_bytes_equal_counted_bytes_after_a_forward_on_every_backend(backend, weight, act):
    from effigy.memory import held_bytes

    layer = make(nn.Linear(256, 128), weight, act, backend)
    layer(torch.randn(40, 256))
    assert abs(held_bytes(layer) - layer.weight_nbytes()) <= 0.05 * layer.weight_nbytes()
    float_bytes = 256 * 128 * 4
    assert held_bytes(layer) < (0.3 if weight.bits == 8 else 0.17) * float_bytes + 2 * 128 * 4


@pytest.mark.parametrize("backend, weight, act", _backend_cases())
def test_state_dict_is_the_bit_packed_grid_whatever_the_backend(backend, weight, act):
    linear = nn.Linear(256, 128)
    layer = make(linear, weight, act, backend)
    reference = make(linear, weight, act)
    state = layer.state_dict()
    assert torch.equal(state["weight_packed"], reference.state_dict()["weight_packed"])
    rebuilt = QuantLinear(256, 128, weight, act, True, backend)
    rebuilt.load_state_dict(state)
    x = torch.randn(20, 256)
    assert torch.equal(rebuilt(x), layer(x))


def test_int4_kernel_matches_the_reference_up_to_bf16_activations():
    linear = nn.Linear(256, 128)
    weight = QuantSpec(bits=4, granularity="group", group_size=64)
    x = torch.randn(24, 256)
    reference = make(linear, weight, None)(x)
    int4 = make(linear, weight, None, "int4")(x)
    assert ((int4 - reference).norm() / reference.norm()) < 0.01
    packed, _ = make(linear, weight, None, "int4").kernel_weight
    assert packed.numel() * packed.element_size() == 128 * 256 // 2  # 4 bits per weight, no wider copy


def test_int4_refuses_shapes_and_widths_its_kernel_cannot_run():
    with pytest.raises(QuantizationError, match="at most 4 bits"):
        make(nn.Linear(64, 32), W8, None, "int4")
    with pytest.raises(QuantizationError, match="group size among"):
        make(nn.Linear(64, 32), QuantSpec(bits=4, granularity="group", group_size=16), None, "int4")


def test_auto_backend_picks_an_exact_path_and_says_which(caplog):
    import logging

    caplog.set_level(logging.INFO, logger="effigy.nn.backend_choice")
    linear = nn.Linear(128, 64)
    layer = make(linear, backend="auto")
    assert layer.backend in ("fbgemm", "int", "reference")
    x = torch.randn(30, 128)
    torch.testing.assert_close(layer(x), make(linear)(x), rtol=1e-4, atol=1e-4)
    weight_only = make(linear, QuantSpec(bits=4, granularity="group", group_size=64), None, "auto")
    assert weight_only.backend in ("int4", "reference")
    assert "backend auto for 64x128" in caplog.text


def test_fbgemm_rounds_on_the_grid_like_the_int_path_near_ties():
    bits = kernels.fbgemm_max_activation_bits()
    act = QuantSpec(bits=bits, granularity="token", dynamic=True)
    qmax = act.qmax
    x = torch.full((32, 64), -0.5000017)
    x[:, 0] = qmax  # per-token scale exactly 1: the other entries sit just below a rounding tie
    linear = nn.Linear(64, 48)
    fbgemm = make(linear, act=act, backend="fbgemm")(x)
    integer = make(linear, act=act, backend="int")(x)
    torch.testing.assert_close(fbgemm, integer, rtol=1e-5, atol=1e-5)
