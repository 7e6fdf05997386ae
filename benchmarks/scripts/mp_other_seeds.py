"""Does the shipped shapes-model W4A8-MP allocation beat uniform W4A8 on prompts and noise it was neither
allocated nor picked on? Both quantized as in the 200-prompt bench (its calibration, seed 0), then sampled
on the held-out prompts of seeds 2 and 3 (100 each) and compared pairwise with bootstrap intervals.

    HF_HUB_OFFLINE=1 python benchmarks/scripts/mp_other_seeds.py   # ~3 min on 2 cores
"""
import copy
import json
from dataclasses import replace
from pathlib import Path

from effigy.bench.quant import QuantBenchSettings
from effigy.bench.quant_report import render_comparisons
from effigy.evaluate.suites import load_suite
from effigy.nn.quantize import quantize
from effigy.recipes import VIDIT_Q_GROUPS, get_recipe
from effigy.recipes.mixed_precision import config_from_group_bits, read_group_bits

OUT = Path("benchmarks/results/quant/t2i-shapes/200-prompts")
SEEDS, PER_CLASS = (2, 3), 10

settings = QuantBenchSettings(model="t2i-shapes", seed=0, samples_per_class=20)
world = load_suite(settings.model, settings)
fp, uniform_config = world.fp_model, get_recipe("vidit-q-w4a8")
mp_config = config_from_group_bits(fp, uniform_config, VIDIT_Q_GROUPS, read_group_bits(OUT / "quant_t2i_shapes_allocation.json"))
uniform, mp = (quantize(copy.deepcopy(fp), c, world.sample_calibration) for c in (uniform_config, mp_config))
results = []
for seed in SEEDS:
    other = load_suite(settings.model, replace(settings, seed=seed, samples_per_class=PER_CLASS))
    reference = other.sample_eval(fp)
    differences = other.compare(other.sample_eval(mp), other.sample_eval(uniform), reference, seed=0, resamples=1000)
    results.append({"variant": f"vidit-q-w4a8-mp (seed {seed})", "baseline": "vidit-q-w4a8",
                    "items": 10 * PER_CLASS, "resamples": 1000, "differences": differences})
(OUT / "mp_other_seeds.json").write_text(json.dumps(results, indent=2))
(OUT / "mp_other_seeds.md").write_text(
    "# Shapes W4A8-MP (200-prompt allocation) vs uniform W4A8 on other seeds\n\n"
    f"Command: `python benchmarks/scripts/mp_other_seeds.py`. Seeds {SEEDS}, {10 * PER_CLASS} held-out prompts each."
    + render_comparisons(results) + "\n")
print((OUT / "mp_other_seeds.md").read_text())
