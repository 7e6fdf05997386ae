"""MDWA on a tiny VAR: full windows equal full attention, bands keep what they say, designed plans compute
fewer pairs, plans round-trip through JSON and refuse another model."""
import pytest
import torch

from effigy.attention import multiscale as mdwa
from effigy.errors import PlanError
from tests.models.test_var import tiny_tokenizer, tiny_var

LABELS = torch.tensor([0, 4, 9])


def test_full_windows_equal_full_attention_exactly():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    reference = model.generate(tokenizer, LABELS, seed=2)
    processors = mdwa.apply_mdwa(model, mdwa.MDWAPlan.full(model))
    assert torch.equal(model.generate(tokenizer, LABELS, seed=2), reference)
    assert sum(p.pairs_computed for p in processors) == sum(p.pairs_full for p in processors) > 0
    mdwa.remove_mdwa(model)
    assert torch.equal(model.generate(tokenizer, LABELS, seed=2), reference)


def test_gathering_every_key_matches_dense_attention():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = mdwa.MDWAPlan.full(model)
    plan.windows = [[[[s for s in plan.scales[: q + 1]] for q in range(len(plan.scales))]
                     for _ in layer] for layer in plan.windows]  # widths that cover every key, not FULL
    reference = model.generate(tokenizer, LABELS, guidance_scale=0.0, top_k=1, seed=2)
    mdwa.apply_mdwa(model, plan)
    torch.testing.assert_close(model.generate(tokenizer, LABELS, guidance_scale=0.0, top_k=1, seed=2), reference)


def test_a_band_keeps_the_keys_around_the_query_position():
    assert mdwa.band_keys(3, 3, 0) == [[q] for q in range(9)]
    rows = mdwa.band_keys(4, 2, 0)  # each 2x2 quarter of the fine map looks at its coarse cell
    assert rows[0] == [0] and rows[3] == [1] and rows[12] == [2] and rows[15] == [3]
    assert sorted(mdwa.band_keys(2, 4, 1)[0]) == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_a_designed_plan_computes_fewer_pairs_and_counts_them():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = mdwa.design_mdwa_plan(model, tokenizer, LABELS, coverage=0.5, drop_mass=0.05, full_scales=2)
    assert 0 < plan.kept_fraction() < 1
    assert all(w == mdwa.FULL for layer in plan.windows for head in layer for q in head[:2] for w in q)
    processors = mdwa.apply_mdwa(model, plan)
    images = model.generate(tokenizer, LABELS, seed=2)
    assert images.shape == (3, 1, 16, 16) and torch.isfinite(images).all()
    computed, full = sum(p.pairs_computed for p in processors), sum(p.pairs_full for p in processors)
    assert computed < full
    near_full = mdwa.design_mdwa_plan(tiny_var(), tokenizer, LABELS, coverage=1.0, drop_mass=0.0)
    assert near_full.kept_fraction() > plan.kept_fraction()


def test_plans_round_trip_and_refuse_another_model(tmp_path):
    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = mdwa.design_mdwa_plan(model, tokenizer, LABELS, coverage=0.8)
    loaded = mdwa.MDWAPlan.load(plan.save(tmp_path / "plan.json"))
    assert loaded == plan
    with pytest.raises(PlanError, match="was made for"):
        mdwa.apply_mdwa(tiny_var(num_layers=3), loaded)
    (tmp_path / "other.json").write_text('{"format": "effigy-ditfastattn-plan/1"}')
    with pytest.raises(PlanError, match="expected 'effigy-mdwa-plan/1'"):
        mdwa.MDWAPlan.load(tmp_path / "other.json")
    with pytest.raises(PlanError, match="cached generation"):
        mdwa.apply_mdwa(model, plan)
        model(LABELS, tokenizer.teacher_forcing_inputs(tokenizer.encode(torch.zeros(3, 1, 16, 16))))
