import pytest
import torch

from effigy.errors import QuantizationError
from effigy.mixedprec import SensitivityTable
from effigy.nn import find_targets
from effigy.recipes import VIDIT_Q_GROUPS, get_recipe
from effigy.recipes.mixed_precision import config_from_group_bits, measure_sensitivity, mixed_precision_config

layer_groups = VIDIT_Q_GROUPS.of
group_metric = VIDIT_Q_GROUPS.metric


def test_groups_of_dit_and_pixart(tiny_dit, tiny_pixart):
    groups = layer_groups(tiny_dit, get_recipe("rtn-w4a8"), "block")
    assert set(groups) == {f"transformer_blocks.{b}.{k}" for b in range(2) for k in ("norm1", "attn1", "ff")}
    kinds = {g.rsplit(".", 1)[1] for g in layer_groups(tiny_pixart, get_recipe("rtn-w4a8"), "block")}
    assert kinds == {"attn1", "attn2", "ff"}


def test_layer_granularity_gives_every_target_its_own_width(tiny_pixart):
    base = get_recipe("rtn-w4a8")
    layers = layer_groups(tiny_pixart, base, "layer")
    targets = find_targets(tiny_pixart, base.include, base.ignore)
    assert set(layers) == set(targets) and all(members == [name] for name, members in layers.items())
    assert group_metric("transformer_blocks.0.attn2.to_k") == "alignment"
    assert group_metric("transformer_blocks.0.attn1.to_k") == group_metric("transformer_blocks.1.ff.net.2") == "visual"
    # an allocation names either layers or blocks; both become per-layer widths
    per_layer = config_from_group_bits(tiny_pixart, base, VIDIT_Q_GROUPS, {n: 3 if n.endswith("to_k") else 6 for n in layers})
    assert per_layer.layer_bits["transformer_blocks.0.attn2.to_k"] == 3
    assert per_layer.layer_bits["transformer_blocks.0.attn2.to_q"] == 6
    blocks = layer_groups(tiny_pixart, base, "block")
    per_block = config_from_group_bits(tiny_pixart, base, VIDIT_Q_GROUPS, {g: 8 if g.endswith("attn2") else 4 for g in blocks})
    assert per_block.layer_bits["transformer_blocks.0.attn2.to_k"] == 8
    assert per_block.layer_bits["transformer_blocks.0.attn1.to_k"] == 4
    with pytest.raises(QuantizationError, match="granularity"):
        layer_groups(tiny_pixart, base, "head")


def test_sensitivity_and_allocation_on_a_tiny_dit(tiny_dit):
    g = torch.Generator().manual_seed(0)
    x, t, y = torch.randn(4, 1, 8, 8, generator=g), torch.tensor([10, 500, 900, 10]), torch.tensor([1, 2, 3, 10])
    run = lambda m: m(x, timestep=t, class_labels=y).sample
    with torch.no_grad():
        reference = run(tiny_dit)

    def evaluate(model):
        with torch.no_grad():
            err = ((run(model) - reference) ** 2).mean().item()
        return {"visual": err, "alignment": 2 * err}

    base = get_recipe("rtn-w4a8")
    blocks = measure_sensitivity(tiny_dit, base, VIDIT_Q_GROUPS, evaluate, bits=(2, 4, 8), around="base", granularity="block")
    assert all(row[2] > 0 == row[4] and row[2] > row[8] for row in blocks.scores.values())  # around uniform W4
    table = measure_sensitivity(tiny_dit, base, VIDIT_Q_GROUPS, evaluate, bits=(2, 4, 8), around="base")  # per layer: may cancel
    assert set(table.groups) == set(layer_groups(tiny_dit, base)) and len(table.groups) > len(blocks.groups)
    assert sum(row[2] for row in table.scores.values()) > 0 > sum(row[8] for row in table.scores.values())
    published = measure_sensitivity(tiny_dit, base, VIDIT_Q_GROUPS, evaluate, bits=(2, 4, 8))  # the default: rest in FP
    assert all(row[2] > row[4] > row[8] >= 0 for row in published.scores.values())  # loss vs FP, one group
    _, near = mixed_precision_config(tiny_dit, base, VIDIT_Q_GROUPS, published, average_bits=4.0, max_moved=0.05)
    moved = sum(published.sizes[g] * abs(b - 4) for g, b in near.bits.items())
    assert moved <= 0.05 * sum(published.sizes.values()) and near.average_bits(published) <= 4.0
    assert set(table.metric.values()) == {"visual"}  # a DiT has no cross-attention to score by alignment
    config, assignment = mixed_precision_config(tiny_dit, base, VIDIT_Q_GROUPS, table, average_bits=4.0)
    assert assignment.average_bits(table) <= 4.0
    assert set(config.layer_bits.values()) <= {2, 4, 8}
    assert len(config.layer_bits) == sum(len(v) for v in layer_groups(tiny_dit, base).values())
    with pytest.raises(QuantizationError, match="too small"):
        mixed_precision_config(tiny_dit, base, VIDIT_Q_GROUPS, table, average_bits=1.5)
    block_config, _ = mixed_precision_config(tiny_dit, base, VIDIT_Q_GROUPS, blocks, average_bits=3.0)
    assert set(block_config.layer_bits) == set(config.layer_bits)
    other = SensitivityTable({"transformer_blocks.9.ff": {4: 1.0}}, {"transformer_blocks.9.ff": 10})
    with pytest.raises(QuantizationError, match="another model"):
        mixed_precision_config(tiny_dit, base, VIDIT_Q_GROUPS, other, average_bits=4.0)
