"""The few-step student against its teacher: ``t2i-shapes-lcm`` at 1, 2 and 4 LCM steps and ``t2i-shapes`` at
20 DPM-Solver steps with CFG, on the same held-out prompts and seeds: adherence (per kind, with the
shuffled-caption chance level), CLIP-score stand-in, FID on the checker's features, and latency per image
timed interleaved. The acceptance run: single-object adherence on its own prompt set.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from effigy.bench.contract import Bench, at_stem, rows_table
from effigy.evaluate.measure import Progress, interleaved_medians, machine_facts, no_progress
from effigy.evaluate.report import SettingsRecord
from effigy.evaluate.t2i import T2ISuite, generate, prompt_set, run_t2i_eval, score_images, summarize

TEACHER, STUDENT = "t2i-shapes", "t2i-shapes-lcm"


@dataclass
class LCMBenchSettings(SettingsRecord):
    prompts: int = 240  # all kinds, cycling single / relation / count
    single_prompts: int = 200  # the acceptance set: held-out single-object prompts
    student_steps: tuple[int, ...] = (1, 2, 4)
    teacher_steps: int = 20
    guidance: float = 4.0  # the teacher's; the student has it distilled in
    seed: int = 0
    latency_prompts: int = 20
    latency_repeats: int = 3
    student_weights: str | None = None  # a folder written by `effigy zoo train t2i-shapes-lcm` (None: shipped)


@torch.no_grad()
def run_lcm_bench(settings: LCMBenchSettings, progress: Progress = no_progress) -> dict:
    teacher = T2ISuite.load(TEACHER)
    student = teacher.with_generator(STUDENT, None if settings.student_weights is None else Path(settings.student_weights))
    runs = [(f"{TEACHER} ({settings.teacher_steps} steps, CFG {settings.guidance:g})", teacher, settings.teacher_steps)]
    runs += [(f"{STUDENT} ({k} step{'s' if k > 1 else ''})", student, k) for k in settings.student_steps]
    singles = prompt_set(settings.single_prompts, "heldout", settings.seed, kinds=("single",))
    rows, images = [], {}
    for name, suite, steps in runs:
        evaluation = run_t2i_eval(suite, settings.prompts, steps, settings.guidance, settings.seed, progress=progress)
        single_images = generate(suite, singles, steps, settings.guidance, settings.seed)
        single = summarize(score_images(suite, singles, single_images))["adherence"]
        rows.append({"variant": name, "steps": steps, **evaluation["summary"], "heldout_single_adherence": single})
        images[name] = evaluation["images"]
    latency = _latency(runs, settings)
    for row in rows:
        row["latency_ms_per_image"] = latency[row["variant"]]
        row["latency_ratio_vs_teacher"] = row["latency_ms_per_image"] / rows[0]["latency_ms_per_image"]
    scenes = prompt_set(settings.prompts, "heldout", settings.seed)
    return {"benchmark": "lcm", "model": STUDENT, "teacher": TEACHER, "settings": settings.to_dict(),
            "machine": machine_facts(), "rows": rows, "images": images,
            "grid_labels": [s.caption for s in scenes[:10]]}


def _latency(runs, settings: LCMBenchSettings) -> dict[str, float]:
    scenes = prompt_set(settings.latency_prompts, "heldout", settings.seed)
    calls = {name: (lambda suite=suite, steps=steps: generate(suite, scenes, steps, settings.guidance, settings.seed))
             for name, suite, steps in runs}
    seconds, _ = interleaved_medians(calls, settings.latency_repeats)
    return {name: 1000 * s / len(scenes) for name, s in seconds.items()}


COLUMNS = [("variant", "model"), ("heldout_single_adherence", "held-out single adherence"),
           ("adherence", "adherence (all kinds)"), ("adherence_single", "single"), ("adherence_relation", "relation"),
           ("adherence_count", "count"), ("clip_score", "CLIP score"), ("fid_features", "FID (features)"),
           ("latency_ms_per_image", "ms / image"), ("latency_ratio_vs_teacher", "latency vs teacher")]
KEY_COLUMNS = COLUMNS[:3] + COLUMNS[6:8] + COLUMNS[-1:]


def render_lcm(result: dict, command: str) -> str:
    from effigy.evaluate.report import machine_line, markdown_table

    s, rows = result["settings"], result["rows"]
    chance = {k: v for k, v in rows[0].items() if "shuffled captions" in k}
    return "\n".join([
        f"# Few-step student: {result['model']} against {result['teacher']}", "",
        f"Command: `{command}`  ",
        f"Seed {s['seed']}: {s['prompts']} held-out prompts (single / relation / count) and, for the acceptance bar, "
        f"{s['single_prompts']} held-out single-object prompts; the same seeds for every row. Latency: "
        f"{s['latency_prompts']} images, median of {s['latency_repeats']} interleaved runs (the student runs one "
        "branch per step, the teacher two).  ",
        machine_line(result["machine"]), "",
        markdown_table(rows, COLUMNS), "",
        "Chance level (teacher's images scored against the next prompt of their kind): "
        + ", ".join(f"{k.split(' ')[0].removeprefix('adherence_')} {v:.3f}" for k, v in chance.items()) + ".",
    ])


def write_lcm_report(result: dict, directory, stem: str, command: str) -> dict:
    from effigy.evaluate.pictures import labelled_grid
    from effigy.evaluate.report import write_results

    printable = {k: v for k, v in result.items() if k != "images"} | {"command": command}
    json_path, md_path = write_results(printable, render_lcm(result, command), directory, stem)
    grid = labelled_grid({name: images[:10] for name, images in result["images"].items()},
                         directory / f"{stem}_grid.png", label_width=230, column_labels=result["grid_labels"])
    return {"json": json_path, "markdown": md_path, "grid": grid}


BENCH = Bench("lcm", LCMBenchSettings, run_lcm_bench, at_stem(write_lcm_report),
              rows_table(KEY_COLUMNS, lambda result, s: "few-step student vs teacher"),
              model=lambda s: "t2i-shapes-lcm")
