"""Did issue 41's hook convention change what effigy computes? Hashes (sha256, 16 hex digits) of what the hooked
code paths produce on the shipped models: samples of each recipe (calibration observers, timestep-range hooks), a
DiTFastAttn plan and its samples, the float model after removing it, a diffusers-cache peer, a LiteVAR plan and
its samples, the FastVAR peer. Run it in two checkouts and compare the JSON files:

    git worktree add /tmp/before e658a32
    PYTHONPATH=/tmp/before/src python benchmarks/scripts/hooks_equivalence.py before.json   # ~3 min on 2 cores
    python benchmarks/scripts/hooks_equivalence.py after.json
"""
import copy
import hashlib
import json
import sys
from pathlib import Path

import torch

from effigy.evaluate.suites import SamplingSettings, class_labels, load_suite
from effigy.nn.quantize import quantize
from effigy.recipes import get_recipe

RECIPES = ("naive-w8a8", "vidit-q-w8a8", "rtn-w4a8", "vidit-q-w4a8", "vidit-q-w4a8-ts")


def digest(value) -> str:
    data = value.detach().contiguous().numpy().tobytes() if torch.is_tensor(value) else \
        json.dumps(value, sort_keys=True).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def sampled_with(model, suite, apply, remove) -> str:
    apply(model)
    try:
        return digest(suite.sample_eval(model))
    finally:
        remove(model)


def dit_paths(out: dict) -> None:
    from effigy.attention import apply_ditfastattn, calibrate_plan, remove_ditfastattn
    from effigy.bench.peers.diffusers_caches import DiffusersCache

    suite = load_suite("dit-digits", SamplingSettings(model="dit-digits", samples_per_class=1, calibration_per_class=1,
                                                      steps=6))
    for recipe in RECIPES:
        out[recipe] = digest(suite.sample_eval(quantize(copy.deepcopy(suite.fp_model), get_recipe(recipe),
                                                        suite.sample_calibration)))
    fp = suite.fp_model
    plan = calibrate_plan(fp, lambda: suite.sample_calibration(fp), 0.1, 0.125)
    out["ditfastattn_plan"] = digest(plan.to_dict())
    out["ditfastattn_images"] = sampled_with(fp, suite, lambda m: apply_ditfastattn(m, plan), remove_ditfastattn)
    out["fp_after_remove"] = digest(suite.sample_eval(fp))
    cache = DiffusersCache("pab", 2, 6)
    try:  # after issue 41: a ModelHook
        from effigy.nn.hooks import attach_hook, detach_hook
        out["pab"] = sampled_with(fp, suite, lambda m: attach_hook(m, cache), lambda m: detach_hook(m, cache.name))
    except ImportError:  # before
        out["pab"] = sampled_with(fp, suite, cache.install, cache.remove)
    out["fp_after_pab"] = digest(suite.sample_eval(fp))


def var_paths(out: dict) -> None:
    from effigy.attention.litevar import apply_litevar, remove_litevar
    from effigy.attention.multiscale import design_litevar_plan
    from effigy.bench.peers.fastvar import install_fastvar, remove_fastvar
    from effigy.models.zoo import load_zoo_model

    suite = load_suite("var-digits", SamplingSettings(model="var-digits", samples_per_class=1, calibration_per_class=1))
    var = suite.fp_model
    tokenizer = load_zoo_model(var.config.tokenizer)[0]
    plan = design_litevar_plan(var, tokenizer, class_labels(1), 0.95, 0.05, 3, 1.0, 3.0, 10_000, 20)
    out["litevar_plan"] = digest(plan.to_dict())
    out["litevar_images"] = sampled_with(var, suite, lambda m: apply_litevar(m, plan), remove_litevar)
    out["fastvar"] = sampled_with(var, suite, lambda m: install_fastvar(m, 0.5), remove_fastvar)
    out["var_fp"] = digest(suite.sample_eval(var))


if __name__ == "__main__":
    torch.manual_seed(0)
    found: dict = {}
    with torch.no_grad():
        dit_paths(found)
        var_paths(found)
    Path(sys.argv[1]).write_text(json.dumps(found, indent=1) + "\n")
    print(found)
