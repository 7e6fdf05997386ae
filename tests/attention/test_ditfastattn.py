import pytest
import torch

from effigy.attention import AttentionPlan, PlanError, apply_ditfastattn, calibrate_plan, remove_ditfastattn
from effigy.attention.plan import FULL, FULL_CFG, SHARE_STEP, WINDOW_RESIDUAL, WINDOW_RESIDUAL_CFG, model_signature
from effigy.models.generators.diffusion import sample_with_guidance, sampling_scheduler


def _plan(model, rows, timesteps, cfg=True, window_fraction=0.25):
    return AttentionPlan(rows, timesteps, window_fraction, 0.1, "rel_l1", model_signature(model), cfg)


def _dit_call(model, x, t, labels):
    return model(x, timestep=torch.full((len(x),), t), class_labels=labels).sample


def _inputs(batch=4):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, 1, 8, 8, generator=g), torch.tensor([1, 2, 10, 10][:batch])


@torch.no_grad()
def test_window_plus_residual_at_the_full_step_equals_full_attention(tiny_dit):
    x, y = _inputs()
    reference = _dit_call(tiny_dit, x, 500, y)
    apply_ditfastattn(tiny_dit, _plan(tiny_dit, [[FULL] * 2, [WINDOW_RESIDUAL] * 2], [500, 500]))
    assert torch.equal(_dit_call(tiny_dit, x, 500, y), reference)  # step 0: full, residual stored
    torch.testing.assert_close(_dit_call(tiny_dit, x, 500, y), reference, atol=1e-5, rtol=1e-5)
    remove_ditfastattn(tiny_dit)


@torch.no_grad()
def test_window_residual_differs_from_full_when_the_input_moves(tiny_dit):
    x, y = _inputs()
    apply_ditfastattn(tiny_dit, _plan(tiny_dit, [[FULL] * 2, [WINDOW_RESIDUAL] * 2], [900, 500]))
    _dit_call(tiny_dit, x, 900, y)
    approx = _dit_call(tiny_dit, x + 0.5, 500, y)
    remove_ditfastattn(tiny_dit)
    exact = _dit_call(tiny_dit, x + 0.5, 500, y)
    assert 0 < (approx - exact).abs().max() < exact.abs().max()


@torch.no_grad()
def test_cfg_sharing_copies_the_conditional_half(tiny_dit):
    x, y = _inputs()
    both = torch.cat([x[:2], x[:2]])
    reference = _dit_call(tiny_dit, both, 500, y)
    for technique in (FULL_CFG, WINDOW_RESIDUAL_CFG):
        apply_ditfastattn(tiny_dit, _plan(tiny_dit, [[FULL] * 2, [technique] * 2], [500, 500]))
        _dit_call(tiny_dit, both, 500, y)
        shared = _dit_call(tiny_dit, both, 500, y)
        remove_ditfastattn(tiny_dit)
        assert shared.shape == reference.shape
        # labels differ between halves, so only the attention is shared: the conditional half is exact
        torch.testing.assert_close(shared[:2], reference[:2], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(shared[2:], reference[2:], atol=1e-5)


@torch.no_grad()
def test_step_sharing_reuses_the_previous_output(tiny_dit):
    x, y = _inputs()
    first = _dit_call(tiny_dit, x, 500, y)
    apply_ditfastattn(tiny_dit, _plan(tiny_dit, [[FULL] * 2, [SHARE_STEP] * 2], [500, 400]))
    _dit_call(tiny_dit, x, 500, y)
    shared = _dit_call(tiny_dit, x, 400, y)
    remove_ditfastattn(tiny_dit)
    assert torch.allclose(shared, _shared_reference(tiny_dit, x, y), atol=1e-5)
    assert not torch.allclose(shared, first)


def _shared_reference(model, x, y):
    """Step 1 at t=400 with every block's attention output taken from step 0 at t=500."""
    outputs = {}
    layers = [b.attn1 for b in model.transformer_blocks]
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, o)) for i, layer in enumerate(layers)]
    _dit_call(model, x, 500, y)
    for h in hooks:
        h.remove()
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: outputs[i]) for i, layer in enumerate(layers)]
    result = _dit_call(model, x, 400, y)
    for h in hooks:
        h.remove()
    return result


def _digits_sampling(model, steps=4):
    scheduler = sampling_scheduler(1000, "squaredcos_cap_v2")
    labels = torch.tensor([1, 2, 3])
    return lambda: sample_with_guidance(model, scheduler, (3, 1, 8, 8), {"class_labels": labels},
                                        {"class_labels": torch.full_like(labels, 10)}, steps, 3.0, seed=0)


@torch.no_grad()
def test_search_threshold_zero_keeps_full_attention_and_large_threshold_shares(tiny_dit):
    run = _digits_sampling(tiny_dit)
    reference = run()
    strict = calibrate_plan(tiny_dit, run, threshold=0.0)
    assert all(t == FULL for row in strict.techniques for t in row)
    loose = calibrate_plan(tiny_dit, run, threshold=10.0)
    assert loose.techniques[0] == [FULL, FULL]
    assert all(t == SHARE_STEP for row in loose.techniques[1:] for t in row)
    assert torch.equal(run(), reference)  # the search leaves the model as it was
    state = apply_ditfastattn(tiny_dit, strict)
    assert torch.allclose(run(), reference, atol=1e-6)
    assert state.flops.fractions()["module_fraction"] == pytest.approx(1.0)
    remove_ditfastattn(tiny_dit)


@torch.no_grad()
def test_search_compresses_more_as_the_threshold_grows(tiny_dit):
    run = _digits_sampling(tiny_dit, steps=6)
    fractions = []
    for threshold in (0.01, 0.1, 0.5):
        plan = calibrate_plan(tiny_dit, run, threshold=threshold, window_fraction=0.25)
        state = apply_ditfastattn(tiny_dit, plan)
        run()
        remove_ditfastattn(tiny_dit)
        fractions.append(state.flops.fractions()["module_fraction"])
        for step_errors in plan.errors:
            assert all(e <= threshold * (b + 1) / 2 + 1e-9 for b, e in enumerate(step_errors))
    assert fractions[0] >= fractions[1] >= fractions[2] and fractions[2] < 1


@torch.no_grad()
def test_plan_on_a_tiny_pixart_with_captions(tiny_pixart):
    captions = torch.randn(2, 5, 12)
    scheduler = sampling_scheduler(1000, "squaredcos_cap_v2")
    run = lambda: sample_with_guidance(tiny_pixart, scheduler, (2, 3, 8, 8), {"encoder_hidden_states": captions},
                                       {"encoder_hidden_states": torch.zeros_like(captions)}, 4, 3.0, seed=0)
    reference = run()
    plan = calibrate_plan(tiny_pixart, run, threshold=0.2)
    assert plan.model["class"] == "PixArtTransformer2DModel" and plan.num_steps == 4
    apply_ditfastattn(tiny_pixart, plan)
    accelerated = run()
    remove_ditfastattn(tiny_pixart)
    assert accelerated.shape == reference.shape and torch.isfinite(accelerated).all()


def test_plan_json_round_trip_and_errors(tmp_path, tiny_dit, tiny_pixart):
    plan = _plan(tiny_dit, [[FULL, FULL], [WINDOW_RESIDUAL, SHARE_STEP]], [900, 500])
    loaded = AttentionPlan.load(plan.save(tmp_path / "plan.json"))
    assert loaded == plan
    with pytest.raises(PlanError, match="calibrated for"):
        apply_ditfastattn(tiny_pixart, plan)
    with pytest.raises(PlanError, match="step 0"):
        _plan(tiny_dit, [[SHARE_STEP, FULL]], [900])
    with pytest.raises(PlanError, match="unknown technique"):
        _plan(tiny_dit, [[FULL, "magic"]], [900])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PlanError, match="unreadable as JSON"):
        AttentionPlan.load(tmp_path / "bad.json")
    with pytest.raises(PlanError, match="1 block"):  # fewer block rows than the model's blocks: refused on apply
        apply_ditfastattn(tiny_dit, _plan(tiny_dit, [[FULL], [SHARE_STEP]], [900, 500]))


@torch.no_grad()
def test_a_run_with_other_timesteps_is_refused(tiny_dit):
    x, y = _inputs()
    apply_ditfastattn(tiny_dit, _plan(tiny_dit, [[FULL] * 2, [SHARE_STEP] * 2], [900, 500]))
    _dit_call(tiny_dit, x, 900, y)
    with pytest.raises(PlanError, match="recalibrate"):
        _dit_call(tiny_dit, x, 300, y)
    remove_ditfastattn(tiny_dit)


@torch.no_grad()
def test_composes_with_quantization(tiny_dit):
    from effigy import QuantConfig, quantize
    from effigy.nn import QuantLinear

    run = _digits_sampling(tiny_dit)
    quantize(tiny_dit, QuantConfig())
    plan = calibrate_plan(tiny_dit, run, threshold=0.3)
    apply_ditfastattn(tiny_dit, plan)
    out = run()
    assert isinstance(tiny_dit.transformer_blocks[0].attn1.to_q, QuantLinear)
    assert torch.isfinite(out).all()


def test_candidate_order_follows_the_flops_of_the_layer():
    from diffusers.models.attention_processor import Attention

    from effigy.attention.search import candidates_by_cost

    attn = Attention(query_dim=128, heads=4, dim_head=32)
    few_tokens = candidates_by_cost(attn, 64, 0.125, cfg=True)
    many_tokens = candidates_by_cost(attn, 4096, 0.125, cfg=True)
    assert few_tokens[0] == many_tokens[0] == SHARE_STEP
    assert few_tokens.index(FULL_CFG) < few_tokens.index(WINDOW_RESIDUAL)  # projections dominate
    assert many_tokens == [SHARE_STEP, WINDOW_RESIDUAL_CFG, WINDOW_RESIDUAL, FULL_CFG]  # the published order
    assert FULL_CFG not in candidates_by_cost(attn, 64, 0.125, cfg=False)


@torch.no_grad()
def test_inside_a_compiled_model_it_gives_what_it_gives_eagerly(tiny_dit):
    """The processors run eagerly between the compiled pieces: a plan with every technique, compiled or not, gives
    the same samples (and the compiled model's class is what the plan is checked against)."""
    import copy

    from effigy.nn.compile import compile as effigy_compile

    run = _digits_sampling(tiny_dit)
    plan = calibrate_plan(tiny_dit, run, threshold=0.3)
    assert plan.technique_counts()[FULL] < sum(plan.technique_counts().values())
    compiled = effigy_compile(copy.deepcopy(tiny_dit))
    apply_ditfastattn(tiny_dit, plan)
    apply_ditfastattn(compiled, plan)
    eager = run()
    torch.testing.assert_close(_digits_sampling(compiled)(), eager, atol=1e-4, rtol=1e-4)
