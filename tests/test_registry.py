import dataclasses

import pytest

from effigy.attention import AttentionPlan
from effigy.errors import CheckpointError, PlanError, QuantizationError, UnknownNameError
from effigy.models.zoo import zoo_entry
from effigy.nn.config import QuantConfig
from effigy.recipes import RECIPES, get_recipe
from effigy.registry import Registry
from effigy.serialize import config_from_dict, config_to_dict


def test_registry_lists_the_known_names_when_a_name_is_unknown():
    kinds = Registry("colour")
    kinds.register("red", 1)
    kinds.register("blue", 2)
    assert kinds.get("blue") == 2 and list(kinds) == ["red", "blue"] and "red" in kinds
    with pytest.raises(UnknownNameError, match="unknown colour 'green': choose one of red, blue"):
        kinds.get("green")
    with pytest.raises(Exception, match="registered twice"):
        kinds.register("red", 3)


def test_unknown_recipe_and_zoo_model_raise_their_own_error_types():
    with pytest.raises(QuantizationError, match="choose one of naive-w8a8"):
        get_recipe("w3a3")
    with pytest.raises(CheckpointError, match="unknown zoo model"):
        zoo_entry("dit-imagenet")


def test_recipes_are_frozen_so_a_lookup_cannot_change_the_registry():
    config = get_recipe("vidit-q-w8a8")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.backend = "fbgemm"
    assert get_recipe("vidit-q-w8a8").backend == "reference"


@pytest.mark.parametrize("name", RECIPES.names())
def test_every_recipe_round_trips_through_its_tagged_json(name):
    data = get_recipe(name).to_dict()
    assert data["format"] == QuantConfig.FORMAT
    assert QuantConfig.from_dict(data) == get_recipe(name)


def test_configs_from_before_the_format_tag_still_load_and_other_formats_are_refused():
    data = get_recipe("vidit-q-w4a8").to_dict()
    untagged = {k: v for k, v in data.items() if k != "format"}
    assert QuantConfig.from_dict(untagged) == get_recipe("vidit-q-w4a8")
    with pytest.raises(QuantizationError, match="not a QuantConfig file"):
        QuantConfig.from_dict({**data, "format": AttentionPlan.FORMAT})
    with pytest.raises(QuantizationError, match="unknown QuantConfig fields"):
        QuantConfig.from_dict({**data, "bits_per_weight": 4})


def test_plans_keep_their_format_check():
    plan = AttentionPlan([["full"]], [999], 0.125, 0.1, "rel_l1", {"class": "X"})
    assert AttentionPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(PlanError, match="not a AttentionPlan file"):
        AttentionPlan.from_dict({**plan.to_dict(), "format": "other/1"})


def test_nested_dataclasses_and_tuples_come_back_typed():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        bits: int = 4

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner | None = None
        names: tuple[str, ...] = ()

    again = config_from_dict(Outer, config_to_dict(Outer(Inner(3), ("a", "b"))))
    assert again == Outer(Inner(3), ("a", "b")) and isinstance(again.names, tuple)


def test_a_long_registry_points_to_its_listing_and_close_names():
    from effigy.errors import UnknownNameError
    from effigy.registry import Registry

    registry = Registry("thing", listing="effigy things list")
    for i in range(40):
        registry.register(f"model-number-{i:02d}", i)
    with pytest.raises(UnknownNameError) as error:
        registry.get("model-numbr-07")
    message = str(error.value)
    assert "`effigy things list` lists all 40" in message and "model-number-07" in message and len(message) < 200
