"""MixDQ's search end to end on a tiny PixArt model's runs: decoupled metrics, the sweep, the validation pick, the
activation widths and the BOS decision."""
from dataclasses import replace

import pytest
import torch

from effigy.metrics import ssim
from effigy.mixedprec.sensitivity import decoupled_evaluator, record_denoiser_calls
from effigy.nn.config import FLOAT_ACTIVATION_BITS
from effigy.recipes import MIXDQ_GROUPS
from effigy.workflows import mixed_precision
from effigy.workflows.mixed_precision import SearchRuns, SearchSettings, ValidationRun


def _tiny_runs(model) -> SearchRuns:
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(4, 3, 8, 8, generator=g), encoder_hidden_states=torch.randn(4, 5, 12, generator=g),
                  timestep=torch.tensor([999, 759, 499, 259]))
    run = lambda m: m(**inputs).sample.clamp(-1, 1)
    return SearchRuns(model, run, run, lambda: ValidationRun(run, None), task_metric="adherence", guidance_batch=False)


@torch.no_grad()
def test_the_decoupled_metrics_are_zero_for_fp(tiny_pixart):
    runs = _tiny_runs(tiny_pixart)
    evaluate = decoupled_evaluator(tiny_pixart, runs.sensitivity, record_denoiser_calls(tiny_pixart, runs.sensitivity),
                                   ssim)
    scores = evaluate(tiny_pixart)
    assert scores["quality"] == pytest.approx(0, abs=1e-10) and scores["content"] == pytest.approx(0, abs=1e-6)


@torch.no_grad()
def test_the_mixdq_search_builds_a_w4a8_config_within_its_targets(tiny_pixart):
    runs = _tiny_runs(tiny_pixart)
    config, record = mixed_precision.search(runs, "mixdq-w4a8")
    layers = list(MIXDQ_GROUPS.of(tiny_pixart, config))
    assert set(config.layer_bits) == set(layers)
    for name, bits in config.layer_bits.items():
        assert bits in MIXDQ_GROUPS.candidates(name, ())
    assert 4 - 0.02 <= record["achieved_average_bits"] <= 4.02
    assert {r["mse_vs_fp"] >= 0 for r in record["sweep"]} == {True}
    chosen = record["sweep"][record["chosen"]]["mse_vs_fp"]
    assert chosen == min(r["mse_vs_fp"] for r in record["sweep"])
    assert set(record["weight_table"]["metric"].values()) == {"content", "quality"}
    in_float = [n for n, b in config.layer_activation_bits.items() if b == FLOAT_ACTIVATION_BITS]
    assert len(in_float) == 2 and {MIXDQ_GROUPS.metric(n) for n in in_float} == {"content", "quality"}
    bos = record["bos"]
    assert bos["range_shared_across_tokens"] is False  # per-token dynamic activations: no range to skew
    assert bos["kept"] is False
    assert bool(config.fp_first_token) == bos["kept"]
    with pytest.raises(Exception, match="outside what the candidate widths reach"):
        mixed_precision.search(runs, "mixdq-w4a8", SearchSettings(average_bits=1.0))


@torch.no_grad()
@pytest.mark.parametrize("granularity, kept", [("tensor", True), ("token", False)])
def test_the_bos_split_is_kept_only_where_an_outlier_first_token_shares_a_range(tiny_pixart, granularity, kept):
    from dataclasses import replace

    from effigy.core.quant import QuantSpec
    from effigy.recipes import get_recipe

    g = torch.Generator().manual_seed(1)
    text = torch.randn(4, 5, 12, generator=g)
    text[:, 0] *= 30  # a first token that stands out at every cross-attention K / V input
    inputs = dict(hidden_states=torch.randn(4, 3, 8, 8, generator=g), encoder_hidden_states=text,
                  timestep=torch.tensor([999, 759, 499, 259]))
    runs = replace(_tiny_runs(tiny_pixart), calibrate=lambda m: m(**inputs).sample)
    base = get_recipe("mixdq-base-a8")
    config = replace(base, activation=QuantSpec(bits=8, granularity=granularity, dynamic=granularity == "token"))
    decided, record = mixed_precision._decide_bos_handling(runs, config)
    assert record["outlier_ratio"] > mixed_precision.BOS_OUTLIER_RATIO
    assert record["kept"] is kept and bool(decided.fp_first_token) is kept


@pytest.mark.parametrize("model, bench_settings", [("dit-digits", "QuantBenchSettings"),
                                                   ("t2i-shapes", "QuantBenchSettings"),
                                                   ("t2i-shapes-lcm", "MixDQBenchSettings")])
def test_effigy_quantize_searches_a_shipped_model_with_its_benchs_runs_and_settings(model, bench_settings,
                                                                                   monkeypatch):
    """Same runs, same settings, same seed, one search function: `effigy quantize` gives the bench's allocation."""
    from effigy.bench import mixdq, quant
    from effigy.recipes import MIXED_PRECISION_RECIPES
    from effigy.workflows.mixed_precision import ShippedSearchSettings

    loaded = []
    monkeypatch.setattr(mixed_precision, "load_suite", lambda name, settings: loaded.append(settings) or "suite")
    monkeypatch.setattr(mixed_precision, "suite_runs", lambda world, settings, per_class: (settings, per_class))
    (suite_settings, per_class), search_settings = mixed_precision.shipped_search(model, seed=3)
    bench = {"QuantBenchSettings": quant.QuantBenchSettings, "MixDQBenchSettings": mixdq.MixDQBenchSettings}[
        bench_settings](model=model, seed=3, samples_per_class=20)
    assert per_class == bench.validation_per_class and loaded == [suite_settings]
    for field in ShippedSearchSettings.__dataclass_fields__:  # what the suite samples with
        assert getattr(suite_settings, field) == getattr(bench, field), field
    recipes = [r for r in bench.recipes if r in MIXED_PRECISION_RECIPES]
    for recipe in recipes:
        expected = bench.search_settings(recipe)
        assert mixed_precision.target_bits(recipe, search_settings) == mixed_precision.target_bits(recipe, expected)
        assert replace(search_settings, average_bits=None) == replace(expected, average_bits=None), recipe
