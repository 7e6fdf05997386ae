import pytest
from torch import nn

from effigy.errors import QuantizationError
from effigy.nn import QuantConfig, find_targets
from effigy.nn.config import DEFAULT_IGNORE


def test_default_ignore_keeps_embedders_and_final_layers_fp(tiny_dit):
    names = set(find_targets(tiny_dit, ("*",), DEFAULT_IGNORE))
    assert {"transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2", "transformer_blocks.0.norm1.linear"} <= names
    assert not any("emb" in n or n.startswith("proj_out") for n in names)


def test_naming_a_non_linear_layer_is_an_error():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Linear(2, 2))
    with pytest.raises(QuantizationError, match="'0' is a Conv2d"):
        find_targets(model, ("0", "1"), ())


def test_no_match_is_an_error():
    with pytest.raises(QuantizationError, match="no Linear layer matches"):
        find_targets(nn.Sequential(nn.Linear(2, 2)), ("decoder.*",), ())


def test_config_round_trip_and_validation():
    config = QuantConfig(name="x", backend="int")
    assert QuantConfig.from_dict(config.to_dict()) == config
    with pytest.raises(QuantizationError, match="lacks the field"):
        QuantConfig.from_dict({"activation": None})
