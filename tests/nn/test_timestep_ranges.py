import copy
from dataclasses import replace

import pytest
import torch

import effigy
from effigy import QuantizationError
from effigy.nn.timestep_ranges import TimestepBalancedLinear
from effigy.recipes import get_recipe


def _calib(model):
    g = torch.Generator().manual_seed(1)
    for t in (50, 300, 600, 900):
        model(torch.randn(3, 1, 8, 8, generator=g), timestep=torch.full((3,), t), class_labels=torch.tensor([1, 2, 10]))


def _run(model, timesteps, x=None):
    x = torch.randn(len(timesteps), 1, 8, 8, generator=torch.Generator().manual_seed(2)) if x is None else x
    with torch.no_grad():
        return model(x, timestep=torch.tensor(timesteps), class_labels=torch.tensor([3] * len(timesteps))).sample


def test_each_timestep_range_gets_its_own_divisor_and_weights(tiny_dit, tmp_path):
    config = replace(get_recipe("vidit-q-w4a8"), timestep_ranges=4, name="ts4")
    single = effigy.quantize(copy.deepcopy(tiny_dit), get_recipe("vidit-q-w4a8"), _calib)
    model = effigy.quantize(copy.deepcopy(tiny_dit), config, _calib)
    layer = model.transformer_blocks[0].attn1.to_q
    assert isinstance(layer, TimestepBalancedLinear) and len(layer.ranges) == 4
    divisors = torch.stack([r.input_divisor for r in layer.ranges])
    assert not torch.allclose(divisors[0], divisors[3])
    assert effigy.weight_nbytes(model, only_quantized_targets=True) > 3 * effigy.weight_nbytes(single, True)
    x = torch.randn(4, 1, 8, 8)
    mixed = _run(model, [100, 400, 700, 950], x)
    alone = torch.cat([_run(model, [t], x[i: i + 1]) for i, t in enumerate((100, 400, 700, 950))])
    torch.testing.assert_close(mixed, alone, atol=1e-5, rtol=1e-5)  # each sample used its own range
    effigy.save(model, tmp_path)
    loaded = effigy.load(tmp_path)
    assert torch.equal(_run(loaded, [100, 700]), _run(model, [100, 700]))
    twin = copy.deepcopy(model)  # the copy's hook must drive the copy's layers
    assert torch.equal(_run(twin, [950, 950]), _run(model, [950, 950]))


def test_ranges_need_balancing_and_unvisited_ranges_use_all_inputs(tiny_dit):
    with pytest.raises(QuantizationError, match="smooth_alpha"):
        replace(get_recipe("rtn-w4a8"), timestep_ranges=2)
    config = replace(get_recipe("vidit-q-w4a8"), timestep_ranges=4)
    only_early = lambda m: m(torch.randn(2, 1, 8, 8), timestep=torch.tensor([10, 20]), class_labels=torch.tensor([1, 2]))
    model = effigy.quantize(copy.deepcopy(tiny_dit), config, only_early)
    ranges = model.transformer_blocks[0].attn1.to_q.ranges
    assert torch.equal(ranges[1].input_divisor, ranges[3].input_divisor)  # both from all inputs (= range 0's)
    assert torch.equal(ranges[0].input_divisor, ranges[3].input_divisor)
    with pytest.raises(QuantizationError, match="never reached"):
        effigy.quantize(copy.deepcopy(tiny_dit), config, lambda m: None)
