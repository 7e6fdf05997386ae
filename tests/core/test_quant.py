import pytest
import torch

from effigy.core import EMAObserver, MinMaxObserver, QuantSpec, compute_qparams, dequantize, fake_quantize, quantize
from effigy.errors import QuantizationError

ALL_BITS = range(2, 9)


@pytest.mark.parametrize("bits", [1, 9, 0, 2.5])
def test_bits_out_of_range_are_refused_with_advice(bits):
    with pytest.raises(QuantizationError, match="choose an integer from 2 to 8"):
        QuantSpec(bits=bits)


def test_unknown_granularity_and_missing_group_size():
    with pytest.raises(QuantizationError, match="unknown"):
        QuantSpec(granularity="row")
    with pytest.raises(QuantizationError, match="group_size"):
        QuantSpec(granularity="group")


def test_group_size_must_divide_dim():
    spec = QuantSpec(bits=4, granularity="group", group_size=5)
    with pytest.raises(QuantizationError, match="does not divide the last dimension \\(16\\)"):
        compute_qparams(torch.randn(3, 16), spec)


@pytest.mark.parametrize("bits", ALL_BITS)
@pytest.mark.parametrize("granularity", ["tensor", "channel", "token", "group"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_error_is_at_most_half_a_step(bits, granularity, symmetric):
    spec = QuantSpec(bits=bits, granularity=granularity, symmetric=symmetric, group_size=8)
    x = torch.randn(6, 32) * torch.linspace(0.1, 5, 32)
    scale, zero = compute_qparams(x, spec)
    q = quantize(x, spec, scale, zero)
    assert q.dtype == (torch.int8 if symmetric else torch.uint8)
    assert int(q.min()) >= spec.qmin and int(q.max()) <= spec.qmax
    err = (dequantize(q, spec, scale, zero) - x).abs()
    if granularity == "group":
        err = err.reshape(6, 4, 8)
    assert torch.all(err <= scale / 2 * 1.0001 + 1e-6)


def test_finer_granularity_is_more_accurate():
    x = torch.randn(64, 128) * torch.logspace(-2, 1, 64)[:, None]
    errors = {}
    for granularity in ("tensor", "token"):
        spec = QuantSpec(bits=4, granularity=granularity)
        relative = (fake_quantize(x, spec) - x) / x.std(dim=1, keepdim=True)
        errors[granularity] = relative.pow(2).mean().item()
    assert errors["token"] < errors["tensor"] / 10


def test_fake_quantize_passes_gradients_straight_through():
    x = torch.randn(4, 8, requires_grad=True)
    fake_quantize(x, QuantSpec(bits=4)).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))


def test_minmax_observer_covers_all_batches_and_ema_smooths():
    spec = QuantSpec(bits=8, granularity="tensor")
    mm, ema = MinMaxObserver(spec), EMAObserver(spec, momentum=0.5)
    for peak in (1.0, 4.0, 2.0):
        batch = torch.tensor([-peak, peak])
        mm.update(batch)
        ema.update(batch)
    assert mm.qparams()[0].item() == pytest.approx(4.0 / 127)
    assert ema.qparams()[0].item() == pytest.approx(((1.0 + 0.5 * 3.0) * 0.5 + 2.0 * 0.5) / 127)


def test_observer_without_data_and_token_granularity_errors():
    with pytest.raises(QuantizationError, match="saw no data"):
        MinMaxObserver(QuantSpec()).qparams()
    with pytest.raises(QuantizationError, match="dynamic=True"):
        MinMaxObserver(QuantSpec(granularity="token")).update(torch.randn(2, 3))


def test_spec_dict_round_trip_and_unknown_fields():
    spec = QuantSpec(bits=4, granularity="group", group_size=32, symmetric=False)
    assert QuantSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(QuantizationError, match="unknown QuantSpec fields"):
        QuantSpec.from_dict({"bits": 8, "bogus": 1})
