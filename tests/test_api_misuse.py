"""Misuse of the Python API and malformed files: one EffigyError naming the remedy, never a raw traceback."""
import json

import pytest
import torch

import effigy
from effigy.attention import AttentionPlan
from effigy.errors import EffigyError
from effigy.nn import QuantConfig
from effigy.recipes import get_recipe


def _config_with(**changes):
    data = get_recipe("vidit-q-w8a8").to_dict()
    for key, value in changes.items():
        if key.startswith("weight."):
            data["weight"] = {**data["weight"], key.split(".", 1)[1]: value}
        else:
            data[key] = value
    return data


@pytest.mark.parametrize("changes, message", [
    ({"weight.symmetric": "no"}, "symmetric must be bool"),
    ({"include": "transformer_blocks"}, "include must be tuple"),
    ({"weight.bits": 4.7}, "bits must be int"),
    ({"weight.bits": True}, "bits must be int"),
    ({"layer_bits": [4]}, "layer_bits must be dict"),
])
def test_nonsense_in_a_config_file_is_refused_by_field(changes, message):
    with pytest.raises(EffigyError, match=message):
        QuantConfig.from_dict(_config_with(**changes))


def test_a_good_config_still_round_trips():
    config = get_recipe("vidit-q-w4a8")
    assert QuantConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_malformed_plan_files_are_one_clear_error(tmp_path):
    (tmp_path / "array.json").write_text("[1, 2]")
    (tmp_path / "binary.json").write_bytes(bytes(range(256)))
    for path, message in ((tmp_path / "array.json", "JSON object"), (tmp_path, "is not a file"),
                          (tmp_path / "binary.json", "unreadable as JSON"), (tmp_path / "none.json", "no file")):
        with pytest.raises(EffigyError, match=message):
            AttentionPlan.load(path)


def test_wrong_objects_passed_to_the_entry_points(tmp_path):
    with pytest.raises(EffigyError, match="takes a torch module and a QuantConfig"):
        effigy.quantize("x", get_recipe("vidit-q-w8a8"))
    with pytest.raises(EffigyError, match="needs an AttentionPlan"):
        effigy.apply_ditfastattn(torch.nn.Linear(2, 2), None)
    with pytest.raises(EffigyError, match="transformers causal LM"):
        effigy.PMKVQCache(torch.nn.Linear(2, 2), 1.0)
    with pytest.raises(EffigyError, match="needs a diffusers model"):
        effigy.save(torch.nn.Linear(2, 2), tmp_path / "lin")
    assert not (tmp_path / "lin").exists()  # a refused save leaves no empty folder


@pytest.mark.parametrize("kwargs, message", [
    ({"group_size": 0}, "does not divide head_dim"),
    ({"budget_mb": float("nan")}, "positive finite"),
    ({"budget_mb": 0.0}, "positive finite"),
    ({"window": -1}, "window >= 0"),
    ({"allocation": [4]}, "1 widths for a model with 2 layers"),
    ({"allocation": [4, 5], "target_length": 64}, "must be among"),
])
def test_bad_cache_arguments_are_one_error(kwargs, message):
    from transformers import LlamaConfig

    config = LlamaConfig(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    arguments = {"budget_mb": 1.0, "group_size": 16, **kwargs}
    with pytest.raises(EffigyError, match=message):
        effigy.PMKVQCache(config, **arguments)
