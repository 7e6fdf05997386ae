"""What the W4A8 check scripts share: the quant bench's world and calibration (seed 0), its validation run
(seed 1, 10 per class / 100 prompts), the ViDiT-Q W4A8 balancing divisors, and how a check's rows are written
(JSON + Markdown under benchmarks/results/checks)."""
import json
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from effigy.bench.quant import QuantBenchSettings
from effigy.bench.quant_report import METRIC_NAMES
from effigy.evaluate.measure import machine_facts
from effigy.evaluate.report import machine_line, markdown_table
from effigy.evaluate.suites import BenchSuite, load_suite
from effigy.nn.quantize import balance_divisors
from effigy.recipes import get_recipe

OUT = Path("benchmarks/results/checks")


@dataclass
class ValidationRun:
    world: BenchSuite  # the bench's own world: its FP model and calibration sampler
    validation: BenchSuite
    divisors: dict[str, torch.Tensor]
    reference: torch.Tensor  # FP images of the validation run

    def quality(self, model: nn.Module) -> dict:
        scores = self.validation.quality(self.validation.sample_eval(model), self.reference)
        return {k: v for k, v in scores.items() if v is not None}


def validation_run(model_name: str) -> ValidationRun:
    settings = QuantBenchSettings(model=model_name, seed=0, samples_per_class=20)
    world = load_suite(model_name, settings)
    # the mixed-precision search's validation run (effigy.workflows.mixed_precision.suite_runs)
    validation = load_suite(model_name, replace(settings, seed=settings.seed + 1,
                                                samples_per_class=min(settings.validation_per_class, 20)))
    divisors = balance_divisors(world.fp_model, get_recipe("vidit-q-w4a8"), world.sample_calibration)
    return ValidationRun(world, validation, divisors, validation.sample_eval(world.fp_model))


def write_check(run: ValidationRun, script: str, title: str, rows: list[dict], columns: list[tuple[str, str]]) -> None:
    model_name, task = run.world.name, run.validation.task_metric
    columns = [*columns, *[(key, METRIC_NAMES[key]) for key in (task, "clip_score", "psnr_vs_fp", "ssim_vs_fp", "fid_features")
                           if key in rows[0]]]
    stem = OUT / f"{script}_{model_name.replace('-', '_')}"
    OUT.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"model": model_name, "machine": machine_facts(), "rows": rows}, indent=2))
    stem.with_suffix(".md").write_text(
        f"# {model_name}: {title}\n\nCommand: `python benchmarks/scripts/{script}.py {model_name}`. Validation run: "
        f"seed 1, {len(run.reference)} images, calibration of seed 0.  \n{machine_line(machine_facts())}\n\n"
        + markdown_table(rows, columns) + "\n")
    print(stem.with_suffix(".md").read_text())
