import pytest
import torch

from effigy.bench.peers.diffusers_caches import (
    DiffusersCache,
    _swap_cfg_inputs,
    _swap_cfg_output,
    count_attention,
    magcache_ratios,
)
from effigy.models.generators.diffusion import sample_with_guidance, sampling_scheduler
from effigy.nn.hooks import attach_hook, detach_hook

STEPS = 8


def _digits_run(model, steps=STEPS):
    scheduler = sampling_scheduler(1000, "squaredcos_cap_v2")
    labels = torch.tensor([1, 2, 3])
    return lambda: sample_with_guidance(model, scheduler, (3, 1, 8, 8), {"class_labels": labels},
                                        {"class_labels": torch.full_like(labels, 10)}, steps, 3.0, seed=0)


def _run_counted(model, run):
    tally, undo = count_attention(model)
    images = run()
    undo()
    return images, sum(tally.module.values())


@torch.no_grad()
def test_swapping_the_cfg_halves_around_a_call_changes_nothing(tiny_dit):
    run = _digits_run(tiny_dit, steps=3)
    reference = run()
    handles = [tiny_dit.register_forward_pre_hook(_swap_cfg_inputs, with_kwargs=True),
               tiny_dit.register_forward_hook(_swap_cfg_output)]
    swapped = run()
    for handle in handles:
        handle.remove()
    assert torch.allclose(swapped, reference, atol=1e-6)


@torch.no_grad()
def test_magcache_calibration_gives_one_ratio_per_step(tiny_dit):
    ratios = magcache_ratios(tiny_dit, _digits_run(tiny_dit), STEPS)
    assert len(ratios) == STEPS and ratios[0] == 1.0
    assert all(r > 0 for r in ratios) and len(set(ratios[1:])) > 1


@torch.no_grad()
@pytest.mark.parametrize("method,setting", [("pab", 3), ("fastercache", 2), ("fbc", 10.0), ("taylorseer", 3),
                                            ("magcache", 10.0)])
def test_each_diffusers_cache_saves_attention_and_is_removed_cleanly(tiny_dit, method, setting):
    run = _digits_run(tiny_dit)
    reference, full_flops = _run_counted(tiny_dit, run)
    ratios = magcache_ratios(tiny_dit, run, STEPS) if method == "magcache" else None
    cache = DiffusersCache(method, setting, STEPS, mag_ratios=ratios)
    attach_hook(tiny_dit, cache)
    cached, flops = _run_counted(tiny_dit, run)
    again, flops_again = _run_counted(tiny_dit, run)  # a second run starts from reset state
    detach_hook(tiny_dit, cache.name)
    assert flops < full_flops
    assert torch.isfinite(cached).all() and not torch.equal(cached, reference)
    assert torch.allclose(again, cached, atol=1e-6) and flops_again == flops
    assert torch.equal(run(), reference)  # removed: the model is FP again
