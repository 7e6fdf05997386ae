"""effigy.compile: every recipe's compiled forward equals its eager forward (within the kernels' rounding); a
compiled 8-bit layer runs an integer GEMM (no float matmul for it) where the CPU has a fast one, and otherwise
keeps its backend with one logged line; a checkpoint loaded by effigy.load compiles to the same outputs."""
import copy
import logging

import pytest
import torch
from torch import nn
from torch._inductor.utils import run_and_get_code

import effigy
from effigy.core import kernels
from effigy.nn import QuantLinear
from effigy.nn.compile import compile_settings
from effigy.recipes import LITEVAR_RECIPES, RECIPES, get_recipe
from tests.recipes.test_conformance import _dit


def _inputs():
    g = torch.Generator().manual_seed(3)
    return {"hidden_states": torch.randn(2, 1, 8, 8, generator=g), "timestep": torch.tensor([500, 500]),
            "class_labels": torch.tensor([1, 10])}


def _relative(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("recipe", [r for r in RECIPES if r not in LITEVAR_RECIPES])
@torch.no_grad()
def test_every_recipe_compiles_to_its_eager_outputs(recipe):
    torch.manual_seed(0)
    fp = _dit()
    inputs = _inputs()
    quantized = effigy.quantize(copy.deepcopy(fp), get_recipe(recipe), calib_loop=lambda m: m(**inputs))
    before = quantized(**inputs).sample  # on the recipe's own backend
    compiled = effigy.compile(quantized)
    after_eager = quantized(**inputs).sample  # the same layers, now on the compile backends, eager
    out = compiled(**inputs).sample
    assert _relative(out, after_eager) < 1e-3  # fused kernels reorder float ops: a rare activation rounds the other way
    assert _relative(out, before) < 2e-2  # integer kernels vs the recipe's path: rounding only
    assert compiled.config.sample_size == 8  # the model's attributes read through


def _one_layer(bits=8):
    torch.manual_seed(0)
    linear = nn.Linear(128, 64)
    config = get_recipe("vidit-q-w8a8" if bits == 8 else "rtn-w4a8")
    return effigy.quantize(nn.Sequential(linear), config, calib_loop=lambda m: m(torch.randn(32, 128)))


@torch.no_grad()
def test_a_compiled_8_bit_layer_runs_an_integer_gemm_or_says_why_not(caplog):
    model = _one_layer()
    compiled = effigy.compile(model)
    _, code = run_and_get_code(compiled, torch.randn(40, 128))
    source = "\n".join(code)
    if kernels.cpu_has_vnni():
        assert isinstance(model[0], QuantLinear) and model[0].backend == "graph-int8"
        assert ("_int_mm" in source or "qlinear" in source) and "extern_kernels.mm(" not in source
        assert "extern_kernels.addmm(" not in source
    else:
        assert "keep their backends" in caplog.text


@torch.no_grad()
def test_without_vnni_layers_keep_their_backend_with_one_logged_line(monkeypatch, caplog):
    monkeypatch.setattr(kernels, "cpu_has_vnni", lambda: False)
    model = _one_layer()
    with caplog.at_level(logging.WARNING, logger="effigy.nn.compile"):
        compiled = effigy.compile(model)
    assert model[0].backend == "reference"
    assert [r.message for r in caplog.records if "keep their backends" in r.message] != []
    assert len([r for r in caplog.records if r.name == "effigy.nn.compile"]) == 1
    x = torch.randn(40, 128)
    assert _relative(compiled(x), model(x)) < 1e-5


def test_four_bit_layers_stay_packed_when_compiled():
    model = _one_layer(bits=4)
    packed = model[0].weight_nbytes()
    effigy.compile(model)
    if kernels.cpu_has_vnni():
        assert model[0].backend == "int"
    assert model[0].weight_nbytes() == packed  # never an int8 copy: 4-bit weights stay 4-bit


def test_freezing_and_autotune_are_asked_for_not_assumed(monkeypatch):
    monkeypatch.setattr(kernels, "cpu_isa_class", lambda: "AMX")
    default = compile_settings()
    assert not default.freezing and not default.max_autotune and default.inductor_config() == {"freezing": False}
    asked = compile_settings(freezing=True, max_autotune=True)
    assert asked.inductor_config()["max_autotune_gemm_backends"] == "CPP,ATEN" and asked.freezing


@torch.no_grad()
def test_a_compile_that_fails_with_freezing_falls_back_with_one_line(caplog):
    """On this EPYC, freezing + max-autotune fails to lower the int8 graph: the call still answers, compiled
    without them; where it lowers (AMX), it answers compiled with them."""
    model = _one_layer()
    x = torch.randn(40, 128)
    expected = model(x)
    compiled = effigy.compile(model, freezing=True, max_autotune=True)
    with caplog.at_level(logging.WARNING, logger="effigy.nn.compile"):
        out = compiled(x)
    assert _relative(out, expected) < 1e-3
    fell_back = [r for r in caplog.records if "compiling without them" in r.message]
    assert (len(fell_back) == 1 and not compiled.settings.freezing) or (not fell_back and compiled.settings.freezing)


@torch.no_grad()
def test_a_loaded_checkpoint_compiles_to_the_eager_outputs(tmp_path):
    torch.manual_seed(0)
    inputs = _inputs()
    quantized = effigy.quantize(_dit(), get_recipe("vidit-q-w8a8"), calib_loop=lambda m: m(**inputs))
    effigy.save(quantized, tmp_path / "q")
    loaded = effigy.load(tmp_path / "q")
    eager = loaded(**inputs).sample
    assert _relative(effigy.compile(loaded)(**inputs).sample, eager) < 2e-2
    assert _relative(loaded(**inputs).sample, effigy.load(tmp_path / "q")(**inputs).sample) < 2e-2
