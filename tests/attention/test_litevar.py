"""LiteVAR on a tiny VAR: full windows equal full attention, bands keep what they say, designed plans compute
fewer pairs, ASC shares only where the plan says and computes less, simulated low-bit attention stays close,
plans round-trip through JSON and refuse another model."""
from dataclasses import replace

import pytest
import torch

from effigy.attention import litevar
from effigy.attention import multiscale as mdwa
from effigy.errors import PlanError, QuantizationError
from tests.models.test_var import tiny_tokenizer, tiny_var

LABELS = torch.tensor([0, 4, 9])


def test_full_windows_equal_full_attention_exactly():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    reference = model.generate(tokenizer, LABELS, seed=2)
    processors = litevar.apply_litevar(model, mdwa.LiteVARPlan.full(model))
    assert torch.equal(model.generate(tokenizer, LABELS, seed=2), reference)
    assert sum(p.pairs_computed for p in processors) == sum(p.pairs_full for p in processors) > 0
    litevar.remove_litevar(model)
    assert torch.equal(model.generate(tokenizer, LABELS, seed=2), reference)


def test_gathering_every_key_matches_dense_attention():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = mdwa.LiteVARPlan.full(model)
    plan.windows = [[[[s for s in plan.scales[: q + 1]] for q in range(len(plan.scales))]
                     for _ in layer] for layer in plan.windows]  # widths that cover every key, not FULL
    reference = model.generate(tokenizer, LABELS, guidance_scale=0.0, top_k=1, seed=2)
    litevar.apply_litevar(model, plan)
    torch.testing.assert_close(model.generate(tokenizer, LABELS, guidance_scale=0.0, top_k=1, seed=2), reference)


def test_a_band_keeps_the_keys_around_the_query_position():
    assert mdwa.band_keys(3, 3, 0) == [[q] for q in range(9)]
    rows = mdwa.band_keys(4, 2, 0)  # each 2x2 quarter of the fine map looks at its coarse cell
    assert rows[0] == [0] and rows[3] == [1] and rows[12] == [2] and rows[15] == [3]
    assert sorted(mdwa.band_keys(2, 4, 1)[0]) == [0, 1, 2, 4, 5, 6, 8, 9, 10]


def test_a_designed_plan_computes_fewer_pairs_and_counts_them():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = mdwa.design_litevar_plan(model, tokenizer, LABELS, coverage=0.5, drop_mass=0.05, full_scales=2)
    assert 0 < plan.kept_fraction() < 1
    assert all(w == mdwa.FULL for layer in plan.windows for head in layer for q in head[:2] for w in q)
    processors = litevar.apply_litevar(model, plan)
    images = model.generate(tokenizer, LABELS, seed=2)
    assert images.shape == (3, 1, 16, 16) and torch.isfinite(images).all()
    kept, full = sum(p.pairs_kept for p in processors), sum(p.pairs_full for p in processors)
    assert kept < full == sum(p.pairs_computed for p in processors)  # the masked kernel evaluates every pair
    flops = litevar.total_flops(processors)
    assert flops["kept_core_flops"] < flops["core_flops"] == flops["full_core_flops"]
    near_full = mdwa.design_litevar_plan(tiny_var(), tokenizer, LABELS, coverage=1.0, drop_mass=0.0)
    assert near_full.kept_fraction() > plan.kept_fraction()


def test_plans_round_trip_and_refuse_another_model(tmp_path):
    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = mdwa.design_litevar_plan(model, tokenizer, LABELS, coverage=0.8)
    loaded = mdwa.LiteVARPlan.load(plan.save(tmp_path / "plan.json"))
    assert loaded == plan
    with pytest.raises(PlanError, match="was made for"):
        litevar.apply_litevar(tiny_var(num_layers=3), loaded)
    (tmp_path / "other.json").write_text('{"format": "effigy-ditfastattn-plan/1"}')
    with pytest.raises(PlanError, match="expected 'effigy-litevar-plan/1'"):
        mdwa.LiteVARPlan.load(tmp_path / "other.json")
    with pytest.raises(PlanError, match="cached generation"):
        litevar.apply_litevar(model, plan)
        model(LABELS, tokenizer.teacher_forcing_inputs(tokenizer.encode(torch.zeros(3, 1, 16, 16))))


def _shared_everywhere(plan: mdwa.LiteVARPlan) -> mdwa.LiteVARPlan:
    plan.cfg_shared = [[True] * len(plan.scales) for _ in plan.windows]
    return plan


def test_asc_gives_the_unconditional_half_the_conditional_output_and_computes_half():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    seen = []
    processors = litevar.apply_litevar(model, _shared_everywhere(mdwa.LiteVARPlan.full(model)))
    hook = model.blocks[0].attn.register_forward_hook(lambda _m, _a, out: seen.append(out))
    model.generate(tokenizer, LABELS, guidance_scale=3.0, seed=2)
    hook.remove()
    assert all(torch.equal(out[:3], out[3:]) for out in seen)
    flops = litevar.total_flops(processors)
    assert flops["core_flops"] == flops["full_core_flops"] / 2
    assert flops["full_module_flops"] / 2 < flops["module_flops"] < flops["full_module_flops"]
    assert sum(p.pairs_computed for p in processors) * 2 == sum(p.pairs_full for p in processors)


def test_asc_changes_nothing_where_the_plan_shares_nothing_and_needs_a_guided_batch():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    reference = model.generate(tokenizer, LABELS, seed=2)
    plan = mdwa.design_litevar_plan(model, tokenizer, LABELS, coverage=1.0, drop_mass=0.0, asc_threshold=-1.0)
    assert plan.cfg_shared and not any(f for row in plan.cfg_shared for f in row)
    assert all(d > 0 for row in plan.cfg_disagreement for d in row[1:])
    litevar.apply_litevar(model, plan)
    torch.testing.assert_close(model.generate(tokenizer, LABELS, seed=2), reference)
    litevar.apply_litevar(model, _shared_everywhere(mdwa.LiteVARPlan.full(model)))
    with pytest.raises(PlanError, match="conditional; unconditional"):
        model.generate(tokenizer, torch.tensor([1]), guidance_scale=0.0)
    with pytest.raises(PlanError, match="guidance_scale != 0"):
        mdwa.design_litevar_plan(model, tokenizer, LABELS, asc_threshold=0.1, guidance_scale=0.0)


def test_a_calibrated_asc_threshold_shares_the_scales_that_agree():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    probe = mdwa.design_litevar_plan(model, tokenizer, LABELS, asc_threshold=None)
    middle = sorted(d for row in probe.cfg_disagreement for d in row)[len(probe.scales)]
    plan = mdwa.design_litevar_plan(model, tokenizer, LABELS, asc_threshold=middle)
    assert plan.cfg_shared == [[d <= middle for d in row] for row in probe.cfg_disagreement]
    assert 0 < plan.shared_fraction() < 1


def test_simulated_low_bit_attention_stays_close_and_narrower_is_further():
    model, tokenizer = tiny_var(), tiny_tokenizer()
    reference = model.generate(tokenizer, LABELS, guidance_scale=0.0, top_k=1, seed=2)
    plan = mdwa.LiteVARPlan.full(model)
    errors = {}
    for bits in (8, 4):
        litevar.apply_litevar(model, plan, litevar.AttentionQuant(qk_bits=bits))
        images = model.generate(tokenizer, LABELS, guidance_scale=0.0, top_k=1, seed=2)
        errors[bits] = (images - reference).abs().mean().item()
    assert errors[8] < errors[4]
    q = torch.randn(2, 2, 5, 8)
    assert torch.equal(litevar.AttentionQuant().queries_or_keys(q), litevar.AttentionQuant().queries_or_keys(q))
    probs = torch.rand(3, 7)
    assert (litevar.AttentionQuant().probabilities(probs) * 255).sub(
        (litevar.AttentionQuant().probabilities(probs) * 255).round()).abs().max() < 1e-3
    with pytest.raises(QuantizationError, match="bits=1"):
        litevar.AttentionQuant(qk_bits=1)


def test_a_damaged_asc_table_is_refused(tmp_path):
    model = tiny_var()
    plan = mdwa.LiteVARPlan.full(model)
    plan.cfg_shared = [[True]]
    with pytest.raises(PlanError, match="cfg_shared"):
        litevar.apply_litevar(model, plan)
    with pytest.raises(PlanError, match="needs a LiteVARPlan"):
        litevar.apply_litevar(model, {"windows": []})


def _kept_pairs_attention(q, k, v, plan, layer, scale):
    """The reference: each query's softmax over exactly its kept keys (gathered one query at a time)."""
    out = torch.zeros_like(q)
    for h in range(q.shape[1]):
        rows = plan.key_indices(layer, h, scale)
        for i in range(q.shape[2]):
            keys = list(range(k.shape[2])) if rows is None else rows[i]
            probs = (q[:, h, i:i + 1] @ k[:, h, keys].transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
            out[:, h, i] = (probs @ v[:, h, keys])[:, 0]
    return out


MASK_PLAN = mdwa.LiteVARPlan([[[[mdwa.FULL], [mdwa.FULL, mdwa.FULL], [0, mdwa.DROPPED, 1]],  # narrowest band, dropped
                               [[mdwa.FULL], [mdwa.FULL, 0], [mdwa.FULL, mdwa.FULL, 4]]]],  # band wider than the map
                             [1, 2, 4], 0.9, 0.01, 1)


@pytest.mark.parametrize("compiled", [False, True])
def test_the_mdwa_mask_computes_each_querys_kept_keys_only(compiled):
    torch.manual_seed(0)
    plan = MASK_PLAN
    mask = litevar.scale_mask(plan, 0, 2)
    kept = [plan.key_indices(0, h, 2) for h in range(2)]
    assert mask.kept_pairs == sum(len(r) for r in kept[0]) + sum(len(r) for r in kept[1]) < 2 * 16 * 21
    q, k, v = torch.randn(3, 2, 16, 8), torch.randn(3, 2, 21, 8), torch.randn(3, 2, 21, 8)
    attention = torch.compile(litevar.mdwa_attention) if compiled else litevar.mdwa_attention
    torch.testing.assert_close(attention(q, k, v, mask.additive), _kept_pairs_attention(q, k, v, plan, 0, 2))


def test_a_scale_whose_heads_keep_everything_runs_unmasked_and_masks_are_shared():
    assert litevar.scale_mask(MASK_PLAN, 0, 0) is None and litevar.scale_mask(MASK_PLAN, 0, 1) is not None
    same_windows = replace(MASK_PLAN, windows=[row for row in MASK_PLAN.windows])
    assert litevar.scale_mask(same_windows, 0, 2) is litevar.scale_mask(MASK_PLAN, 0, 2)  # built once, reused
    wide = replace(MASK_PLAN, windows=[[[[mdwa.FULL], [mdwa.FULL, mdwa.FULL], [mdwa.FULL, 2, 4]]] * 2])
    assert litevar.scale_mask(wide, 0, 2).additive.eq(0).all()  # bands that cover every key mask nothing


def _damaged(plan, change):
    data = plan.to_dict()
    change(data)
    return mdwa.LiteVARPlan.from_dict(data)


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(scales=d["scales"][::-1]), "scales"),
    (lambda d: d.update(scales=[s + 1 for s in d["scales"]]), "scales"),
    (lambda d: d["windows"][0].pop(), "windows must be"),
    (lambda d: d["windows"].pop(), "windows must be"),
    (lambda d: d["windows"][0][0][2].pop(), "windows must be"),
    (lambda d: d["windows"][0][0][2].__setitem__(0, 1.5), "half-width"),
    (lambda d: d["windows"][0][0][2].__setitem__(0, "1"), "half-width"),
    (lambda d: d["windows"][0][0][2].__setitem__(0, 99), "half-width"),
    (lambda d: d["windows"][0][0][2].__setitem__(0, True), "half-width"),
    (lambda d: d["windows"][1][0].__setitem__(2, [mdwa.DROPPED] * 3), "drops every key scale"),
    (lambda d: [row.__setitem__(slice(None), [mdwa.DROPPED] * len(row)) for layer in d["windows"] for head in layer
                for row in head], "drops every key scale"),
    (lambda d: d.update(full_scales=99), "full_scales"),
    (lambda d: d.update(coverage=0.0), "coverage"),
])
def test_a_damaged_plan_is_refused_before_sampling(change, words):
    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = mdwa.design_litevar_plan(model, tokenizer, LABELS, coverage=0.8)
    with pytest.raises(PlanError, match=words):
        litevar.apply_litevar(model, _damaged(plan, change))


def test_in_compiled_blocks_litevar_generates_what_it_generates_eagerly():
    """MDWA masks and ASC inside blocks under effigy.compile (the scale bench's compiled rows): the same images."""
    from effigy.nn.compile import compile as effigy_compile

    model, tokenizer = tiny_var(), tiny_tokenizer()
    plan = _shared_everywhere(mdwa.design_litevar_plan(model, tokenizer, LABELS, coverage=0.5, drop_mass=0.05,
                                                       full_scales=2))
    litevar.apply_litevar(model, plan)
    eager = model.generate(tokenizer, LABELS, top_k=1, seed=2)
    model.blocks = torch.nn.ModuleList(effigy_compile(block, dynamic=False) for block in model.blocks)
    torch.testing.assert_close(model.generate(tokenizer, LABELS, top_k=1, seed=2), eager, atol=1e-4, rtol=1e-4)
