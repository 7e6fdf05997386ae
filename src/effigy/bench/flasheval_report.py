"""The FlashEval bench's Markdown and its tau-vs-size chart."""
from __future__ import annotations

from pathlib import Path

from effigy.bench.contract import Bench, at_stem
from effigy.bench.flasheval import METHODS, FlashEvalBenchSettings, matrix_name, run_flasheval_bench
from effigy.evaluate.pictures import line_chart
from effigy.evaluate.report import format_value, machine_line, write_results

COLUMNS = [("metric", "metric"), ("size", "prompts"), *((m, m) for m in METHODS)]
MEASURE_NAMES = {"kd": "margin KD", "tau_b": "tau-b"}


def table_rows(result: dict, measure: str = "kd") -> list[dict]:
    """One row per (metric, size): each method's held-out ``measure`` as mean +/- std over the seeded splits."""
    rows = []
    for metric, data in result["metrics"].items():
        for size, methods in data["by_size"].items():
            rows.append({"metric": metric, "size": int(size),
                         **{m: f"{v[measure]['mean']:.3f} +/- {v[measure]['std']:.3f}" for m, v in methods.items()}})
    return rows


def _method_table(result: dict, measure: str) -> list[str]:
    lines = [f"### Held-out {MEASURE_NAMES[measure]} by subset size", "",
             "| metric | prompts | " + " | ".join(METHODS) + " |", "|" + "---|" * (2 + len(METHODS))]
    return lines + ["| " + " | ".join(format_value(row.get(k, "n/a")) for k, _ in COLUMNS) + " |"
                    for row in table_rows(result, measure)] + [""]


def _size(matched: float | None, curve: dict) -> str:
    return f"{matched:.0f}" if matched is not None else f"more than {max(int(s) for s in curve)}"


def _claim_rows(metric: str, where: str, claim: dict, curve: dict) -> list[str]:
    rows = []
    for measure, c in claim.items():
        released = format_value(c.get("released")) if "released" in c else "n/a"
        rows.append(f"| {metric} | {where} | {MEASURE_NAMES[measure]} | {format_value(c['flasheval'])} | "
                    f"{format_value(c['random_at_claim_size'])} | {_size(c['random_size_matched'], curve)} | "
                    f"{'yes' if c['meets_claim'] else 'no'} | {released} |")
    return rows


def _claims(result: dict) -> list[str]:
    settings = result["settings"]
    k, big = settings["claim_size"], settings["claim_random_size"]
    lines = ["## The paper's claim, measured here", "",
             f"FlashEval's {k} prompts against random {big} on held-out models: the claim holds where FlashEval's "
             f"tau is at least random {big}'s; the random size matched is where the random curve (mean over its "
             "draws, log-interpolated) reaches FlashEval's tau.", "",
             f"| metric | split | measure | FlashEval {k} | random {big} | random size matched | meets 10x | "
             f"released {k} |", "|---|---|---|---|---|---|---|---|"]
    for metric, data in result["metrics"].items():
        lines += _claim_rows(metric, f"{settings['splits']} seeded splits (mean)", data["claim"], data["random_curve"])
        if "named_split" in data:
            named = data["named_split"]
            lines += _claim_rows(metric, named["name"], named["claim"], named["random_curve"])
    return lines + [""]


def _curve(result: dict) -> list[str]:
    lines = ["## Random subsets: the reference curve (mean over draws and seeded splits)", "",
             "| metric | " + " | ".join(str(s) for s in next(iter(result["metrics"].values()))["random_curve"]) + " |"]
    lines.append("|" + "---|" * (1 + len(next(iter(result["metrics"].values()))["random_curve"])))
    for metric, data in result["metrics"].items():
        for measure, name in MEASURE_NAMES.items():
            lines.append(f"| {metric} {name} | " + " | ".join(format_value(v[measure])
                                                               for v in data["random_curve"].values()) + " |")
    return lines + [""]


def render(result: dict, command: str, chart: str) -> str:
    settings, timing, matrix = result["settings"], result["timing"], result["matrix"]
    heldout = len(result["splits"]["seed 0"]["heldout"])
    source = matrix["provenance"].get("command") or matrix["provenance"].get("source", "n/a")
    left_out = matrix["provenance"].get("left_out") or []
    lines = [
        f"# FlashEval benchmark: {result['model']}", "",
        f"Command: `{command}`  ",
        f"Matrix: {matrix['variants']} models x {matrix['prompts']} prompts ({source}); metrics "
        f"{', '.join(matrix['metrics'])}" + (f"; {len(left_out)} incomplete models left out" if left_out else "")
        + ".  ",
        f"Protocol: {settings['splits']} seeded splits (seeds 0..{settings['splits'] - 1}), each holding out "
        f"{heldout} models that no method reads; every number is a subset's ranking of the held-out models "
        "against their full-set ranking: margin KD (the paper's Kendall tau-b with pairs closer than the metric's "
        "margin, the median paired standard error on the training models, counted as ties) and plain tau-b. "
        f"FlashEval: {settings['rounds']} rounds x {settings['subsets']} subsets, one search per split; random and "
        f"stratified: {settings['random_draws']} draws per split; mean +/- std over the splits"
        + (f"; the named split `{settings['split_file']}` is reported on its own" if settings["split_file"] else "")
        + (f"; released subset: `{settings['released']}`" if settings["released"] else "") + ".  ",
        machine_line(result["machine"]), "",
        f"![held-out margin KD vs subset size]({chart})", "",
        *_claims(result), *_method_table(result, "kd"), *_method_table(result, "tau_b"), *_curve(result),
    ]
    if timing is None:
        return "\n".join(lines)
    lines += ["## Ranking a new variant", "",
              f"`{timing['variant']['name']}` (not in the matrix), scored on the {timing['subset_prompts']}-prompt "
              f"subset: {timing['subset_seconds']:.1f} s; on all {timing['full_prompts']} prompts: "
              f"{timing['full_seconds']:.1f} s ({timing['speedup']:.1f}x), same process, model built beforehand."]
    return "\n".join(lines)


def write_flasheval_report(result: dict, directory: Path, stem: str, command: str) -> dict[str, Path]:
    series = {}
    for metric, data in result["metrics"].items():
        lines = {m: [(int(size), v[m]["kd"]["mean"], v[m]["kd"]["min"], v[m]["kd"]["max"])
                     for size, v in data["by_size"].items() if m in v] for m in METHODS}
        lines["random (reference curve)"] = [(int(size), v["kd"], v["kd"], v["kd"])
                                             for size, v in data["random_curve"].items()]
        series[metric] = {name: points for name, points in lines.items() if points}
    chart = line_chart(series, directory / f"{stem}_tau.png", "prompts in the subset", "held-out margin KD")
    json_path, md_path = write_results(result, render(result, command, chart.name), directory, stem)
    return {"json": json_path, "markdown": md_path, "chart": chart}


BENCH = Bench("flasheval", FlashEvalBenchSettings, run_flasheval_bench, at_stem(write_flasheval_report),
              lambda result, s: ({"rows": table_rows(result)}, COLUMNS, "held-out margin KD by subset size"),
              model=matrix_name)
