import copy

import pytest
import torch

from effigy.bench.quant import QuantBenchSettings, memory_probe
from effigy.evaluate.measure import run_in_fresh_process
from effigy.recipes import get_recipe


def test_memory_probe_reports_a_plausible_peak_in_a_fresh_process():
    settings = QuantBenchSettings(steps=2, latency_samples=10).to_dict()
    fp = run_in_fresh_process(memory_probe, None, settings)
    quant = memory_probe(get_recipe("naive-w8a8").to_dict(), settings)  # static recipe: calibrates too
    assert 50 < fp["peak_rss_mib"] < 4096
    assert quant["peak_rss_mib"] >= quant["rss_mib"] > 0


def _tiny_world(model):
    from effigy.evaluate.suites import BenchSuite
    from effigy.models.generators.diffusion import sample_with_guidance, sampling_scheduler

    labels = torch.tensor([1, 2, 3, 4])
    run = lambda m: sample_with_guidance(m, sampling_scheduler(1000, "squaredcos_cap_v2"), (4, 1, 8, 8),
                                         {"class_labels": labels}, {"class_labels": torch.full_like(labels, 10)},
                                         4, 3.0, seed=0)
    return BenchSuite("tiny", model, run, run, run, run, scores=None, features=None, fid=None, alignment=None,
                      denoiser_call=None, task_metric="class_accuracy", fid_features="none", grid_index=labels)


@torch.no_grad()
@pytest.mark.parametrize("metric", ["denoiser", "propagated"])
def test_replayed_sensitivity_is_zero_for_fp_and_falls_with_the_width(tiny_dit, metric):
    from dataclasses import replace

    from effigy.mixedprec.sensitivity import record_denoiser_calls
    from effigy.nn.quantize import quantize
    from effigy.workflows.mixed_precision import sensitivity_evaluator, suite_runs

    world = _tiny_world(tiny_dit)
    assert len(record_denoiser_calls(tiny_dit, world.sample_sensitivity)) == 4  # one call per step
    evaluate = sensitivity_evaluator(suite_runs(world, None), metric, 3.0)
    assert evaluate(tiny_dit) == {"visual": 0.0, "alignment": 0.0}
    base = get_recipe("rtn-w4a8")
    losses = {b: evaluate(quantize(copy.deepcopy(tiny_dit), replace(base, weight=replace(base.weight, bits=b))))
              for b in (3, 4, 8)}
    for name in ("visual", "alignment"):
        assert losses[3][name] > losses[4][name] > losses[8][name] > 0
    with pytest.raises(ValueError, match="denoiser"):
        sensitivity_evaluator(suite_runs(world, None), "ssim")


@torch.no_grad()
def test_propagation_gains_measure_how_a_kick_at_each_call_moves_the_final_sample(tiny_dit):
    from effigy.mixedprec.sensitivity import propagation_gains, record_denoiser_calls

    world = _tiny_world(tiny_dit)
    calls = record_denoiser_calls(tiny_dit, world.sample_sensitivity)
    gains = propagation_gains(tiny_dit, world.sample_sensitivity, calls, 3.0)
    # (the random tiny model's first x0 prediction is clipped by the sampler's thresholding: no gain there)
    assert len(gains) == 4 and all(g >= 0 for g in gains) and sum(g > 0 for g in gains) >= 3
    assert len(set(round(g, 6) for g in gains)) == 4  # each call kicked on its own, not all at once
    assert not tiny_dit._forward_hooks  # the kick is removed afterwards
    # in the linear regime the gain does not depend on the kick's size
    assert propagation_gains(tiny_dit, world.sample_sensitivity, calls, 3.0, size=0.01) == pytest.approx(gains, rel=0.1)


@torch.no_grad()
def test_propagated_sensitivity_weights_each_call_by_its_gain(tiny_dit, monkeypatch):
    from dataclasses import replace

    from effigy.mixedprec.sensitivity import cfg_parts, record_denoiser_calls
    from effigy.nn.quantize import quantize
    from effigy.workflows import mixed_precision as mp_workflow

    world = _tiny_world(tiny_dit)
    base = get_recipe("rtn-w4a8")
    # only the first call counts when the others have no gain: the loss is that call's error alone
    monkeypatch.setattr(mp_workflow, "propagation_gains", lambda model, run, calls, guidance, **_: [1.0, 0.0, 0.0, 0.0])
    first_only = mp_workflow.sensitivity_evaluator(mp_workflow.suite_runs(world, None), "propagated", 3.0)
    model = quantize(copy.deepcopy(tiny_dit), replace(base, weight=replace(base.weight, bits=3)))
    calls = record_denoiser_calls(tiny_dit, world.sample_sensitivity)
    args, kwargs, fp_eps = calls[0]
    guided, fp_guided = (cfg_parts(e, 3.0)[0] for e in (model(*args, **kwargs).sample, fp_eps))
    assert first_only(model)["visual"] == pytest.approx((guided - fp_guided).pow(2).sum().item(), rel=1e-5)


def _scored_world(scores, features, fid):
    from effigy.evaluate.suites import BenchSuite

    return BenchSuite("scored", None, None, None, None, None, scores=scores, features=features, fid=fid,
                      alignment=None, denoiser_call=None, task_metric="class_accuracy", fid_features="mean",
                      grid_index=torch.arange(2))


def test_world_quality_is_the_mean_of_its_per_image_scores_and_compare_pairs_them():

    from effigy.evaluate.suites import image_quality

    scores = lambda images, reference: {"class_accuracy": (images.mean((1, 2, 3)) > 0).float(),
                                        **image_quality(images, reference)}
    features = lambda images: images.flatten(1)
    fid = lambda f, idx: float(f[idx].mean())  # a set-level statistic, recomputed per resample
    world = _scored_world(scores, features, fid)
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(40, 1, 8, 8, generator=generator)
    close = reference + 0.05 * torch.randn(reference.shape, generator=generator)
    far = reference + 0.5 * torch.randn(reference.shape, generator=generator)
    quality = world.quality(close, reference)
    assert quality["class_accuracy"] == pytest.approx((close.mean((1, 2, 3)) > 0).float().mean().item())
    assert quality["fid_features"] == pytest.approx(close.mean().item(), abs=1e-6)
    differences = world.compare(close, far, reference, resamples=200)
    assert differences["psnr_vs_fp"]["significant"] and differences["psnr_vs_fp"]["low"] > 10  # ~20 dB apart
    assert differences["ssim_vs_fp"]["difference"] > 0
    against_itself = world.compare(close, close, reference, resamples=200)
    assert all(d["difference"] == 0 and not d["significant"] for d in against_itself.values())
    assert set(world.compare(close, far, None, resamples=50)) == {"class_accuracy", "fid_features"}  # no FP: no PSNR


def test_comparison_rows_call_a_lower_fid_better_and_a_zero_crossing_interval_noise():
    from effigy.bench.quant_report import comparison_rows, render_comparisons

    d = lambda value, low, high: {"difference": value, "low": low, "high": high, "confidence": 0.95,
                                  "significant": low > 0 or high < 0}
    pair = {"variant": "mp", "baseline": "w4", "items": 60, "resamples": 500,
            "differences": {"fid_features": d(-3.0, -5.0, -1.0), "psnr_vs_fp": d(-0.2, -0.4, -0.1),
                            "adherence": d(0.01, -0.02, 0.04)}}
    verdicts = {row["metric"]: row["verdict"] for row in comparison_rows([pair])}
    assert verdicts == {"FID (features)": "better", "PSNR vs FP (dB)": "worse", "adherence": "within noise"}
    assert "60 evaluation images" in render_comparisons([pair]) and "500 resamples" in render_comparisons([pair])


def test_validation_table_lists_each_trust_region_with_uniform_first():
    from effigy.bench.quant_report import _trust_region_text, render_validation

    allocation = {"validation": [{"max_moved": 0.0, "moved_layers": 0, "class_accuracy": 1.0, "psnr_vs_fp": 26.8},
                                 {"max_moved": None, "moved_layers": 13, "class_accuracy": 1.0, "psnr_vs_fp": 26.9}]}
    text = render_validation({**allocation, "task_tolerance": 0.02, "psnr_tolerance": 0.1},
                             {"seed": 4, "samples_per_class": 20, "validation_per_class": 10})
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| trust region | layers off 4 bits | class acc | PSNR")
    assert lines[1].startswith("| 0 | 0 |") and lines[2].startswith("| none | 13 |")
    assert "seed 5 (10 per class" in text
    assert "best mean rank over the quality scores (1 = best on all) among those at most 2 point(s)" in text
    ranked = render_validation({"validation": [dict(r, mean_rank=1.5) for r in allocation["validation"]],
                                "task_tolerance": 0.01, "psnr_tolerance": 0.1},
                               {"seed": 4, "samples_per_class": 20, "validation_per_class": 10})
    assert "| mean rank |" in ranked and "| 1.5 |" in ranked
    assert "best mean rank" in ranked and "1 point(s) below uniform W4's task score and 0.1 dB below its PSNR" in ranked

    assert "uniform W4 won" in _trust_region_text({**allocation, "max_moved": 0.0})
    assert "<= 0.15 x all weights (picked" in _trust_region_text({**allocation, "max_moved": 0.15})
    assert _trust_region_text({"max_moved": None}) == ", no trust region"
    assert "<= 0.05 x" in _trust_region_text({"max_moved": 0.05})  # one fixed region: no validation run
