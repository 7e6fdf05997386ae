"""Do the two text-to-image judges agree? The attribute checker and the CLIP-score stand-in rank degraded variants
of the shipped shapes model; their Kendall tau is the bench (``effigy bench t2i-scorers``)."""
from __future__ import annotations

from dataclasses import dataclass

from effigy.bench.contract import Bench, json_and_markdown
from effigy.evaluate.measure import Progress
from effigy.evaluate.report import SettingsRecord
from effigy.evaluate.t2i_report import SCORER_COLUMNS, render_scorer_agreement


@dataclass
class ScorerAgreementSettings(SettingsRecord):
    prompts: int = 60
    steps: int = 20
    guidance: float = 4.0
    seed: int = 0


def run_scorer_bench(settings: ScorerAgreementSettings, progress: Progress) -> dict:
    from effigy.evaluate.t2i import T2ISuite, run_scorer_agreement

    result = run_scorer_agreement(T2ISuite.load(), settings.prompts, settings.steps, settings.guidance, settings.seed,
                                  progress)
    return {**result, "seed": settings.seed, "prompts": settings.prompts}


BENCH = Bench("t2i-scorers", ScorerAgreementSettings, run_scorer_bench, json_and_markdown(render_scorer_agreement),
              lambda result, s: (result, SCORER_COLUMNS, f"Kendall tau = {result['kendall_tau']:.3f}"),
              model=lambda s: "t2i-shapes", file_name="t2i_scorer_agreement")
