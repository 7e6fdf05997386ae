"""The FlashEval bench's Markdown and its tau-vs-size chart."""
from __future__ import annotations

from pathlib import Path

from effigy.bench.contract import Bench, at_stem
from effigy.bench.flasheval import METHODS, FlashEvalBenchSettings, matrix_name, run_flasheval_bench
from effigy.evaluate.pictures import line_chart
from effigy.evaluate.report import format_value, machine_line, write_results

COLUMNS = [("metric", "metric"), ("size", "prompts"), *((m, m) for m in METHODS)]


def table_rows(result: dict) -> list[dict]:
    """One row per (metric, size): each method's held-out tau as mean +/- std."""
    rows = []
    for metric, data in result["metrics"].items():
        for size, methods in data["by_size"].items():
            rows.append({"metric": metric, "size": int(size),
                         **{m: f"{v['mean']:.3f} +/- {v['std']:.3f}" for m, v in methods.items()}})
    return rows


def render(result: dict, command: str, chart: str) -> str:
    settings, timing = result["settings"], result["timing"]
    lines = [
        f"# FlashEval benchmark: {result['model']}", "",
        f"Command: `{command}`  ",
        f"Matrix: {result['matrix']['variants']} variants x {result['matrix']['prompts']} held-out prompts "
        f"(`effigy flasheval build`, {result['matrix']['provenance'].get('command', 'n/a')}); metrics "
        f"{', '.join(result['matrix']['metrics'])}.  ",
        f"Variants split in halves by seed {settings['split_seed']}: every tau below is Kendall tau-b (ties within "
        "the metric's margin: the median paired standard error on the training variants) of a subset's ranking of "
        f"the {len(result['split']['heldout'])} held-out variants against their full-set ranking. FlashEval: "
        f"{settings['search_seeds']} search seeds, {settings['rounds']} rounds x {settings['subsets']} subsets; "
        f"random and stratified: {settings['random_draws']} draws; Anchor Points: {settings['search_seeds']} "
        "k-medoids seeds. Mean +/- std over those.  ",
        machine_line(result["machine"]), "",
        f"![held-out tau vs subset size]({chart})", "",
        "| metric | prompts | " + " | ".join(METHODS) + " |", "|" + "---|" * (2 + len(METHODS)),
    ]
    lines += ["| " + " | ".join(format_value(row.get(k)) for k, _ in COLUMNS) + " |" for row in table_rows(result)]
    lines += ["", "## The paper's claim, measured here", "",
              "| metric | margin | FlashEval tau at 50 | random tau at 500 (mean) | random size that matches FlashEval at 50 |",
              "|---|---|---|---|---|"]
    for metric, data in result["metrics"].items():
        claim = data["claim"]
        size = claim["size"] if claim["size"] is not None else f"more than {max(claim['random_mean_tau_by_size'])}"
        lines.append(f"| {metric} | {format_value(data['margin'])} | {format_value(claim['flasheval_tau'])} | "
                     f"{format_value(claim['random_tau_at_claim_random_size'])} | {size} |")
    if timing is None:
        return "\n".join(lines)
    lines += ["", "## Ranking a new variant", "",
              f"`{timing['variant']['name']}` (not in the matrix), scored on the {timing['subset_prompts']}-prompt "
              f"subset: {timing['subset_seconds']:.1f} s; on all {timing['full_prompts']} prompts: "
              f"{timing['full_seconds']:.1f} s ({timing['speedup']:.1f}x), same process, model built beforehand."]
    return "\n".join(lines)


def write_flasheval_report(result: dict, directory: Path, stem: str, command: str) -> dict[str, Path]:
    chart = line_chart({metric: {m: [(int(size), v[m]["mean"], v[m]["p5"], v[m]["p95"])
                                      for size, v in data["by_size"].items()] for m in METHODS}
                        for metric, data in result["metrics"].items()},
                       directory / f"{stem}_tau.png", "prompts in the subset", "held-out tau")
    json_path, md_path = write_results(result, render(result, command, chart.name), directory, stem)
    return {"json": json_path, "markdown": md_path, "chart": chart}


BENCH = Bench("flasheval", FlashEvalBenchSettings, run_flasheval_bench, at_stem(write_flasheval_report),
              lambda result, s: ({"rows": table_rows(result)}, COLUMNS, "held-out Kendall tau by subset size"),
              model=matrix_name)
