import dataclasses
import json

import pytest
import torch

import effigy
from effigy import CheckpointError, QuantConfig, QuantizationError, QuantLinear
from effigy.recipes import get_recipe


def run(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 1, 8, 8, generator=g)
    return model(x, timestep=torch.tensor([10, 500, 10, 500]), class_labels=torch.tensor([1, 2, 10, 10])).sample


def _redigest(folder):
    """Re-record the digest after a test edits a checkpoint on purpose, to reach the checks behind it."""
    from effigy.checkpoint.integrity import write_digest

    write_digest(folder, [p.name for p in folder.iterdir() if p.name != "checkpoint_digest.json"])


def calib(model):
    for seed in range(2):
        run(model, seed)


@pytest.mark.parametrize("recipe", ["naive-w8a8", "vidit-q-w8a8"])
def test_quantize_replaces_block_linears_and_stays_close(tiny_dit, recipe):
    reference = run(tiny_dit)
    model = effigy.quantize(tiny_dit, get_recipe(recipe), calib)
    n_quant = sum(isinstance(m, QuantLinear) for m in model.modules())
    assert n_quant == 2 * 7  # q, k, v, out, ff in, ff out, adaLN modulation per block
    out = run(model)
    assert (out - reference).abs().mean() / reference.abs().mean() < 0.05


def test_save_load_round_trip_is_exact(tiny_dit, tmp_path):
    model = effigy.quantize(tiny_dit, get_recipe("naive-w8a8"), calib)
    effigy.save(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "quantization_config.json").read_text())
    assert saved["name"] == "naive-w8a8"
    loaded = effigy.load(tmp_path / "ckpt")
    assert torch.equal(run(loaded), run(model))
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


def test_float_model_round_trip(tiny_dit, tmp_path):
    effigy.save(tiny_dit, tmp_path)
    assert torch.equal(run(effigy.load(tmp_path)), run(tiny_dit))


def test_static_recipe_without_calibration_and_double_quantization(tiny_dit):
    with pytest.raises(QuantizationError, match="pass calib_loop"):
        effigy.quantize(tiny_dit, get_recipe("naive-w8a8"))
    effigy.quantize(tiny_dit, get_recipe("vidit-q-w8a8"))
    with pytest.raises(QuantizationError, match="already quantized"):
        effigy.quantize(tiny_dit, get_recipe("vidit-q-w8a8"))


def test_missing_folder_and_pickles_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        effigy.load(tmp_path / "nope")
    (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="refuses pickles"):
        effigy.load(tmp_path)


def test_corrupt_safetensors_gets_a_clear_error(tiny_dit, tmp_path):
    effigy.save(effigy.quantize(tiny_dit, get_recipe("vidit-q-w8a8")), tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="does not match the checkpoint's digest"):
        effigy.load(tmp_path)
    from effigy.checkpoint.integrity import write_digest

    write_digest(tmp_path, ["config.json", "model.safetensors", "quantization_config.json"])  # past the digest
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        effigy.load(tmp_path)


def test_checkpoint_from_another_recipe_is_a_mismatch(tiny_dit, tmp_path):
    effigy.save(effigy.quantize(tiny_dit, get_recipe("vidit-q-w8a8")), tmp_path)
    config = QuantConfig.from_dict(json.loads((tmp_path / "quantization_config.json").read_text()))
    config = dataclasses.replace(config, weight=effigy.QuantSpec(bits=4, granularity="channel"))
    (tmp_path / "quantization_config.json").write_text(json.dumps(config.to_dict()))
    with pytest.raises(CheckpointError, match="does not match the checkpoint's digest"):
        effigy.load(tmp_path)
    _redigest(tmp_path)  # as if written so: the weights' header still disagrees with the 4-bit config
    with pytest.raises(CheckpointError, match="do not match the model"):
        effigy.load(tmp_path)


def test_unknown_model_class_is_refused(tmp_path, tiny_dit):
    effigy.save(tiny_dit, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["_class_name"] = "os.system"
    (tmp_path / "config.json").write_text(json.dumps(config))
    _redigest(tmp_path)
    with pytest.raises(CheckpointError, match="not a diffusers model"):
        effigy.load(tmp_path)


def test_weight_bytes_of_quantized_linears(tiny_dit):
    fp_bytes = effigy.weight_nbytes(tiny_dit)
    model = effigy.quantize(tiny_dit, get_recipe("vidit-q-w8a8"))
    assert effigy.weight_nbytes(model) < fp_bytes


def test_balanced_rotated_mixed_checkpoint_round_trip(tiny_dit, tmp_path):
    from dataclasses import replace

    names = [n for n, m in tiny_dit.named_modules() if n.endswith("attn1.to_q")]
    config = replace(get_recipe("vidit-q-w4a8"), rotate=True, layer_bits={names[0]: 8})
    model = effigy.quantize(tiny_dit, config, calib)
    layer = model.get_submodule(names[0])
    assert layer.weight_spec.bits == 8 and layer.rotated and layer.input_divisor is not None
    assert model.get_submodule(names[1]).weight_spec.bits == 4
    effigy.save(model, tmp_path / "ckpt")
    loaded = effigy.load(tmp_path / "ckpt")
    assert torch.equal(run(loaded), run(model))


def test_balancing_needs_calibration_and_layer_bits_need_real_layers(tiny_dit):
    from dataclasses import replace

    with pytest.raises(QuantizationError, match="channel balancing.*calib_loop"):
        effigy.quantize(tiny_dit, get_recipe("vidit-q-w4a8"))
    with pytest.raises(QuantizationError, match="layer_bits names layers"):
        effigy.quantize(tiny_dit, replace(get_recipe("rtn-w4a8"), layer_bits={"pos_embed.proj": 8}))
    with pytest.raises(QuantizationError, match="bits=9"):
        replace(get_recipe("rtn-w4a8"), layer_bits={"x": 9})


def test_precomputed_balancing_divisors_give_the_same_model(tiny_dit):
    import copy

    from effigy.nn.quantize import balance_divisors

    config = get_recipe("vidit-q-w4a8")
    x = torch.randn(3, 1, 8, 8)
    calib = lambda m: m(x, timestep=torch.tensor([10, 400, 900]), class_labels=torch.tensor([1, 2, 10]))
    divisors = balance_divisors(tiny_dit, config, calib)
    a = effigy.quantize(copy.deepcopy(tiny_dit), config, calib)
    b = effigy.quantize(copy.deepcopy(tiny_dit), config, input_divisors=divisors)
    with torch.no_grad():
        assert torch.equal(run(a), run(b))
    with pytest.raises(QuantizationError, match="input_divisors lacks"):
        effigy.quantize(copy.deepcopy(tiny_dit), config, input_divisors={})
