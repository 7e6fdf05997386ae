import pytest
import torch

from effigy.bench import scale as scale_bench
from effigy.bench.scale_kv import CACHES, KVScaleSettings, make_cache
from effigy.bench.scale_layers import layer_paths
from effigy.bench.scale_report import render_scale
from effigy.errors import EffigyError


@pytest.fixture
def tiny_architecture(monkeypatch):
    monkeypatch.setitem(scale_bench.ARCHITECTURES, "tiny", dict(num_layers=1, num_attention_heads=2,
                                                                attention_head_dim=64))
    return "tiny"


def test_model_section_rows_measure_every_variant_against_fp32(tiny_architecture):
    variants = ("fp32", "bf16", "quantize_dynamic int8", "vidit-q-w8a8 reference", "vidit-q-w8a8 fbgemm",
                "rtn-w4a16 int4")
    settings = scale_bench.ScaleBenchSettings(architecture="tiny", tokens=(16,), variants=variants, repeats=1,
                                              measure_memory=False)
    rows = {r["variant"]: r for r in scale_bench.run_model_section(settings, 16)}
    assert rows["fp32"]["relative_output_error"] == 0 and rows["fp32"]["held_bytes_ratio"] == 1
    assert rows["bf16"]["held_bytes_ratio"] == pytest.approx(0.5, abs=0.01)
    assert rows["vidit-q-w8a8 fbgemm"]["backends"] == "fbgemm"
    assert rows["vidit-q-w8a8 reference"]["linear_held_bytes_ratio"] < 0.3
    assert rows["rtn-w4a16 int4"]["linear_held_bytes_ratio"] < 0.17
    assert all(0 < r["relative_output_error"] < 0.1 for n, r in rows.items() if n != "fp32")


def test_a_token_count_that_is_not_a_square_grid_is_refused(tiny_architecture):
    with pytest.raises(EffigyError, match="square number"):
        scale_bench.build_dit("tiny", 200, 0)


def test_layer_paths_agree_with_fp32():
    linear = torch.nn.Linear(256, 128)
    x = torch.randn(20, 256)
    reference = linear(x)
    for name, path in layer_paths(linear).items():
        error = ((path(x) - reference).norm() / reference.norm()).item()
        assert error < 0.1, name


def test_every_kv_cache_is_made_and_takes_an_update():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=50, hidden_size=128, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2)).eval()
    for name in CACHES:
        cache = make_cache(name, model, 1024, KVScaleSettings())
        keys, _ = cache.update(torch.randn(1, 2, 40, 32), torch.randn(1, 2, 40, 32), 0)
        assert keys.shape[-2] == 40, name


def test_report_names_skipped_variants_and_says_weights_are_random():
    result = {"architecture": "dit-xl-2", "weights": "random (seeded)", "machine": {
        "cpu": "x", "torch_threads": 2, "torch": "2.13", "vnni": False}, "settings": {"repeats": 3, "cfg_batch": 2},
        "rows": [{"variant": "fp32"}], "layers": [], "skipped": {"vidit-q-w8a8 int": "slow here"}}
    text = render_scale(result, "effigy bench scale")
    assert "Random weights" in text and "Not run on this machine: vidit-q-w8a8 int (slow here)" in text


def test_compiled_rows_record_their_compile_time_and_keep_4_bit_weights_small(tiny_architecture):
    """The compiled variants run through effigy.compile: their rows carry the first call (compile) time and a
    ratio against bf16 compiled; compiled W4 linears still hold under 0.17x of their fp32 bytes."""
    variants = ("fp32", "bf16 compiled", "vidit-q-w8a8 compiled", "rtn-w4a8 compiled", "rtn-w4a16 bf16 compiled")
    settings = scale_bench.ScaleBenchSettings(architecture="tiny", tokens=(16,), variants=variants, repeats=1,
                                              measure_memory=False)
    rows = {r["variant"]: r for r in scale_bench.run_model_section(settings, 16)}
    assert rows["bf16 compiled"]["speedup_vs_bf16_compiled"] == 1 and rows["bf16 compiled"]["compiled"]
    assert not rows["fp32"]["compiled"] and rows["vidit-q-w8a8 compiled"]["first_call_s"] > 0
    assert rows["rtn-w4a8 compiled"]["linear_held_bytes_ratio"] < 0.17
    assert rows["rtn-w4a16 bf16 compiled"]["linear_held_bytes_ratio"] < 0.17  # bf16 activations, 4-bit weights
    assert rows["vidit-q-w8a8 compiled"]["linear_held_bytes_ratio"] < 0.3
    assert all(0 < r["relative_output_error"] < 0.1 for n, r in rows.items() if n != "fp32")


def test_the_pixart_architecture_runs_text_conditioned_rows(monkeypatch):
    """PixArt-alpha's trunk (adaLN-single, cross-attention to text tokens): a CFG call with text features, and
    the recipes' quantized rows against its fp32 output, cross-attention layers among the quantized ones."""
    monkeypatch.setitem(scale_bench.ARCHITECTURES, "pixart-alpha", dict(
        num_layers=1, num_attention_heads=2, attention_head_dim=32, cross_attention_dim=64, caption_channels=48))
    model = scale_bench.build_dit("pixart-alpha", 16, 0)
    inputs = scale_bench.dit_inputs(model, 2, 0)
    assert type(model).__name__ == "PixArtTransformer2DModel"
    assert inputs["encoder_hidden_states"].shape == (2, scale_bench.TEXT_TOKENS, 48)
    settings = scale_bench.ScaleBenchSettings(architecture="pixart-alpha", tokens=(16,), repeats=1,
                                              variants=("fp32", "bf16", "quantize_dynamic int8",
                                                        "vidit-q-w8a8 compiled"),
                                              measure_memory=False)
    rows = {r["variant"]: r for r in scale_bench.run_model_section(settings, 16)}
    assert all(0 < r["relative_output_error"] < 0.1 for n, r in rows.items() if n != "fp32")
    assert rows["vidit-q-w8a8 compiled"]["linear_held_bytes_ratio"] < 0.3
    assert "attn2.to_k" in " ".join(scale_bench._w8a8_targets(model))
    from effigy.evaluate.measure import machine_facts

    report = render_scale({"architecture": "pixart-alpha", "weights": "random", "machine": machine_facts(),
                           "settings": {"repeats": 1, "cfg_batch": 2}, "rows": [{"variant": "fp32"}], "layers": []}, "cmd")
    assert "cross-attention to 120" in report


def test_the_freezing_variant_is_asked_for_never_a_default(tiny_architecture):
    """On AMX CPUs freezing + max-autotune may pay; elsewhere it fails to lower or crawls: a row only on request."""
    assert scale_bench.FROZEN in scale_bench.VARIANTS and scale_bench.FROZEN not in scale_bench.default_variants()
    model = scale_bench.build_variant(scale_bench.FROZEN, scale_bench.build_dit("tiny", 16, 0))
    assert model.settings.freezing and model.settings.max_autotune  # built, not yet compiled (the first call does)


def test_the_attention_section_times_each_fixed_plan_beside_full_attention_and_first_block_cache():
    from effigy.bench.scale_attention import AttentionScaleSettings, fixed_plans, run_attention_section
    from effigy.bench.scale_report import render_attention

    plans = fixed_plans(4, 2)
    assert all(rows[0] == ["full", "full"] for rows in plans.values())  # the first step computes what later reuse
    assert plans["all together"][1:] == [["window_residual_cfg"] * 2, ["share_step"] * 2, ["window_residual_cfg"] * 2]
    section = run_attention_section(AttentionScaleSettings(architecture="dit-s-2", tokens=64, blocks=2, steps=4,
                                                           compiled=False))
    rows = {row["variant"]: row for row in section["rows"]}
    assert set(rows) == {"full attention", *(f"DiTFastAttn: {name}" for name in plans),
                         "diffusers FirstBlockCache 0.05"}
    assert rows["full attention"]["speedup"] == 1.0 and rows["full attention"]["attention_flops_fraction"] is None
    assert rows["DiTFastAttn: nothing skipped (overhead)"]["attention_flops_fraction"] == 1.0
    fractions = [rows[f"DiTFastAttn: {name}"]["attention_flops_fraction"] for name in plans if "nothing" not in name]
    assert all(0 < f < 1 for f in fractions)
    assert rows["DiTFastAttn: all together"]["attention_flops_fraction"] == min(fractions)
    assert all(row["run_s"] > 0 and row["attention_s"] > 0 for row in rows.values())
    assert "random weights: speed only" in "\n".join(render_attention(section))


def test_the_litevar_section_times_dense_mdwa_asc_and_both_on_a_var_of_the_d16_schedule():
    from effigy.bench.scale_litevar import LiteVARScaleSettings, build_var, fixed_plan, run_litevar_section
    from effigy.bench.scale_report import render_litevar

    settings = LiteVARScaleSettings(depth=2, repeats=1, compiled=False, memory=False)
    model = build_var(2, 0)
    assert sum(s * s for s in model.scales) == 680 and model.config.width == 128
    plan = fixed_plan({"class": "VARTransformer", "num_layers": 2, "heads": 2, "scales": list(model.scales)}, settings)
    assert plan.windows[0][0][-1] == [-1, -1, -1, -1, 1, 1, 1, 1, 2, 2]  # side <= 4 whole, then bands
    assert not any(plan.cfg_shared[0][:2]) and all(plan.cfg_shared[0][2:])
    section = run_litevar_section(settings)
    rows = {row["variant"]: row for row in section["rows"]}
    assert list(rows) == ["dense (fp32, eager)", "MDWA", "ASC", "MDWA + ASC"]
    assert rows["dense (fp32, eager)"]["speedup"] == 1.0
    assert all(row["generation_s"] > row["attention_s"] > 0 for row in rows.values())
    assert 0 < section["kept_pairs"] < 0.5 and section["asc_shared"] == 0.8
    assert "random weights: speed only" in "\n".join(render_litevar(section))
