import copy

import pytest
import torch

import effigy
from effigy import CheckpointError, QuantizationError
from effigy.checkpoint.multiwidth import load_multiwidth, save_multiwidth
from effigy.recipes import get_recipe


def _calib(model):
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    model(x, timestep=torch.tensor([10, 400, 900]), class_labels=torch.tensor([1, 2, 10]))


def _run(model):
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        return model(x, timestep=torch.tensor([500, 500]), class_labels=torch.tensor([3, 10])).sample


def test_any_selection_equals_quantizing_with_that_allocation(tiny_dit, tmp_path):
    base = get_recipe("vidit-q-w4a8")
    save_multiwidth(copy.deepcopy(tiny_dit), base, tmp_path, widths=(4, 6, 8), calib_loop=_calib)
    names = [n for n, m in effigy.quantize(copy.deepcopy(tiny_dit), get_recipe("rtn-w4a8")).named_modules()
             if isinstance(m, effigy.QuantLinear)]
    layer_bits = {name: (4, 6, 8)[i % 3] for i, name in enumerate(names)}
    selected = load_multiwidth(tmp_path, layer_bits)
    from dataclasses import replace

    direct = effigy.quantize(copy.deepcopy(tiny_dit), replace(base, layer_bits=layer_bits), _calib)
    assert torch.equal(_run(selected), _run(direct))
    widths = {m.weight_spec.bits for m in selected.modules() if isinstance(m, effigy.QuantLinear)}
    assert widths == {4, 6, 8}
    uniform8 = load_multiwidth(tmp_path, default_bits=8)
    assert (_run(uniform8) - _run(tiny_dit)).abs().mean() < (_run(selected) - _run(tiny_dit)).abs().mean()


def test_bad_selections_and_folders_are_refused(tiny_dit, tmp_path):
    save_multiwidth(copy.deepcopy(tiny_dit), get_recipe("rtn-w4a8"), tmp_path / "mw", widths=(4, 8))
    with pytest.raises(QuantizationError, match="not stored"):
        load_multiwidth(tmp_path / "mw", default_bits=6)
    with pytest.raises(QuantizationError, match="does not quantize"):
        load_multiwidth(tmp_path / "mw", {"pos_embed.proj": 8})
    with pytest.raises(CheckpointError, match="not a multi-width"):
        load_multiwidth(tmp_path)
