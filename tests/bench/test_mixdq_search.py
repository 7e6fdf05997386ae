"""MixDQ's search end to end on a tiny PixArt world: decoupled metrics, the sweep, the validation pick, the
activation widths and the BOS decision."""
import pytest
import torch

from effigy.bench import mixdq_search
from effigy.bench.mixdq import MixDQBenchSettings
from effigy.evaluate.suites import BenchSuite
from effigy.metrics import ssim
from effigy.mixedprec.sensitivity import decoupled_evaluator, record_denoiser_calls
from effigy.nn.config import FLOAT_ACTIVATION_BITS
from effigy.recipes import MIXDQ_GROUPS


def _tiny_world(model):
    g = torch.Generator().manual_seed(0)
    inputs = dict(hidden_states=torch.randn(4, 3, 8, 8, generator=g), encoder_hidden_states=torch.randn(4, 5, 12, generator=g),
                  timestep=torch.tensor([999, 759, 499, 259]))
    run = lambda m: m(**inputs).sample.clamp(-1, 1)
    return BenchSuite("tiny", model, run, run, run, run, scores=None, features=None, fid=None, alignment=None,
                      denoiser_call=None, task_metric="adherence", fid_features="none", grid_index=torch.arange(4),
                      guidance_batch=False)


@torch.no_grad()
def test_the_decoupled_metrics_are_zero_for_fp(tiny_pixart):
    world = _tiny_world(tiny_pixart)
    evaluate = decoupled_evaluator(tiny_pixart, world.sample_sensitivity,
                                   record_denoiser_calls(tiny_pixart, world.sample_sensitivity), ssim)
    scores = evaluate(tiny_pixart)
    assert scores["quality"] == pytest.approx(0, abs=1e-10) and scores["content"] == pytest.approx(0, abs=1e-6)


@torch.no_grad()
def test_the_mixdq_search_builds_a_w4a8_config_within_its_targets(tiny_pixart, monkeypatch):
    world = _tiny_world(tiny_pixart)
    monkeypatch.setattr(mixdq_search, "validation_world", lambda settings: world)
    settings = MixDQBenchSettings()
    config, record = mixdq_search.mixdq_variant(world, settings, lambda *a: (lambda: None), "mixdq-w4a8")
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
        mixdq_search.mixdq_variant(world, MixDQBenchSettings(mixdq_bits=1.0), lambda *a: (lambda: None), "mixdq-w4a8")


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
    world = _tiny_world(tiny_pixart)
    world = replace(world, sample_calibration=lambda m: m(**inputs).sample)
    base = get_recipe("mixdq-base-a8")
    config = replace(base, activation=QuantSpec(bits=8, granularity=granularity, dynamic=granularity == "token"))
    decided, record = mixdq_search._decide_bos_handling(world, config)
    assert record["outlier_ratio"] > mixdq_search.BOS_OUTLIER_RATIO
    assert record["kept"] is kept and bool(decided.fp_first_token) is kept
