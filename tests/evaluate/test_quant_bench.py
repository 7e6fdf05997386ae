import copy

import pytest
import torch

from effigy.evaluate.measure import run_in_fresh_process
from effigy.evaluate.quant_bench import QuantBenchSettings, memory_probe
from effigy.recipes import get_recipe


def test_memory_probe_reports_a_plausible_peak_in_a_fresh_process():
    settings = QuantBenchSettings(steps=2, latency_samples=10).to_dict()
    fp = run_in_fresh_process(memory_probe, None, settings)
    quant = memory_probe(get_recipe("naive-w8a8").to_dict(), settings)  # static recipe: calibrates too
    assert 50 < fp["peak_rss_mib"] < 4096
    assert quant["peak_rss_mib"] >= quant["rss_mib"] > 0


def _tiny_world(model):
    from effigy.evaluate.worlds import BenchWorld
    from effigy.models.diffusion import sample_with_guidance, sampling_scheduler

    labels = torch.tensor([1, 2, 3, 4])
    run = lambda m: sample_with_guidance(m, sampling_scheduler(1000, "squaredcos_cap_v2"), (4, 1, 8, 8),
                                         {"class_labels": labels}, {"class_labels": torch.full_like(labels, 10)},
                                         4, 3.0, seed=0)
    return BenchWorld("tiny", model, run, run, run, run, None, None, None, "class_accuracy", "none", labels)


@torch.no_grad()
def test_denoiser_sensitivity_is_zero_for_fp_and_falls_with_the_width(tiny_dit):
    from dataclasses import replace

    from effigy.api import quantize
    from effigy.evaluate.quant_bench import record_denoiser_calls, sensitivity_evaluator

    world = _tiny_world(tiny_dit)
    assert len(record_denoiser_calls(tiny_dit, world.sample_sensitivity)) == 4  # one call per step
    evaluate = sensitivity_evaluator(world, "denoiser", 3.0)
    assert evaluate(tiny_dit) == {"visual": 0.0, "alignment": 0.0}
    base = get_recipe("rtn-w4a8")
    losses = {b: evaluate(quantize(copy.deepcopy(tiny_dit), replace(base, weight=replace(base.weight, bits=b))))
              for b in (3, 4, 8)}
    for metric in ("visual", "alignment"):
        assert losses[3][metric] > losses[4][metric] > losses[8][metric] > 0
    with pytest.raises(ValueError, match="denoiser"):
        sensitivity_evaluator(world, "ssim")
