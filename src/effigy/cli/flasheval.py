"""``effigy flasheval ...``: build a score matrix, search a prompt subset, rank a new variant on it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from effigy.cli._common import (
    JSON,
    SEED,
    check_choice,
    command_line,
    console,
    deprecated,
    echo_json,
    finite,
    fresh_run_folder,
    progress,
    writable_file,
    writable_folder,
)

app = typer.Typer(help="FlashEval: a small prompt subset that ranks text-to-image variants like the full set.",
                  no_args_is_help=True)
MATRIX = Path("benchmarks/results/flasheval/t2i-shapes/score_matrix.json")


@app.command("build")
def build(
    prompts: int = typer.Option(1000, min=2, max=100_000, help="Held-out prompts, cycling single / relation / count."),
    seed: int = SEED,
    variants: Optional[Path] = typer.Option(None, help="JSON list of variant definitions (default: effigy's 41)."),
    shard_size: int = typer.Option(100, min=1, help="Prompts per job (the unit of parallelism and of the cache)."),
    executor: str = typer.Option("local", help="local (process pool) or ray (RAY_ADDRESS, else a local cluster)."),
    workers: int = typer.Option(2, min=0, help="Worker processes (0: in this process)."),
    cache: Optional[Path] = typer.Option(None, help="Finished jobs (default: <out>.cache/); a rerun resumes."),
    out: Optional[Path] = typer.Option(None, help="The matrix: <out> (.json) and its .safetensors. Default: "
                                       "runs/<time>/score_matrix.json; the committed matrix is written only when "
                                       f"named ({MATRIX})."),
    as_json: bool = JSON,
) -> None:
    """Score every variant on every prompt (adherence, CLIP-score stand-in); resumable from the cache."""
    from effigy.evaluate.flasheval.build import EXECUTORS, MatrixPlan, build_matrix, variants_from_file
    from effigy.evaluate.flasheval.variants import default_variants

    check_choice(executor, EXECUTORS, "--executor")
    specs = variants_from_file(variants) if variants is not None else default_variants()
    out = writable_file(out if out is not None else fresh_run_folder() / "score_matrix.json")
    cache = writable_folder(cache or out.with_suffix(".cache"), "--cache")
    plan = MatrixPlan(tuple(specs), prompts=prompts, seed=seed, shard_size=shard_size)
    with progress(not as_json) as reporter:
        matrix = build_matrix(plan, cache, executor, workers, reporter)
    matrix.provenance["command"] = command_line()
    path = matrix.save(out)
    if as_json:
        echo_json({"variants": len(matrix.variants), "prompts": len(matrix.prompts), "metrics": list(matrix.metrics),
                   "out": str(path)})
        return
    console.print(f"score matrix: {len(matrix.variants)} variants x {len(matrix.prompts)} prompts, metrics "
                  f"{', '.join(matrix.metrics)} -> {path}")


@app.command("search")
def search_subset(
    scores: Path = typer.Option(MATRIX, help="A matrix: effigy's .json, a CSV / NPZ [models x prompts], a CSV / JSONL "
                                "/ Parquet table of model, prompt, metric, score rows, or a folder of per-model JSON "
                                "files (FlashEval's released tree too)."),
    metric: Optional[str] = typer.Option(None, help="The metric to rank by (default: each of the matrix's; a long "
                                         "table keeps this metric's rows; a single table is named by this, else by "
                                         "FlashEval's metric folder, else 'score')."),
    size: int = typer.Option(50, min=1, help="Prompts in the subset."),
    rounds: int = typer.Option(8, min=1, max=100),
    subsets: int = typer.Option(2000, min=10, max=1_000_000, help="Random subsets drawn per round."),
    margin: Optional[float] = typer.Option(None, min=0.0, callback=finite,
                                           help="Tie margin (default: the median paired standard error)."),
    seed: int = SEED,
    heldout_fraction: float = typer.Option(0.5, min=0.0, max=0.9, callback=finite,
                                           help="Share of the models held out (seeded by --seed) to judge the subset "
                                           "on; 0 searches on every model given (keep your own held-out models out "
                                           "of --scores)."),
    split: Optional[Path] = typer.Option(None, help="The split to use instead: FlashEval's train_id.pth (inside its "
                                         "release) or a JSON {\"train\": [model names]}; the rest are held out."),
    out: Optional[Path] = typer.Option(None, help="The subset JSON; with several metrics, one file each with "
                                       "_<metric> added to its name. Default: runs/<time>/subset_<metric>_<size>.json."),
    as_json: bool = JSON,
) -> None:
    """FlashEval's iterative search on the training models; tau reported on the held-out ones."""
    from effigy.evaluate.flasheval import read_scores
    from effigy.evaluate.flasheval.search import SearchSettings, search_and_record
    from effigy.evaluate.flasheval.splits import Split, read_split

    matrix = read_scores(scores, metric)  # each model left out is logged there, once, with its prompt count
    if metric is not None:
        matrix.table(metric)  # an unknown metric is refused here, with the matrix's metrics named
    chosen = read_split(split, matrix.names) if split is not None else Split.random(len(matrix.variants), seed,
                                                                                     heldout_fraction)
    metrics = [metric] if metric is not None else matrix.metrics
    settings = SearchSettings(size=size, rounds=rounds, subsets=subsets, seed=seed)
    run = fresh_run_folder() if out is None else None
    paths = {name: writable_file(_subset_path(out, run, name, size, len(metrics))) for name in metrics}  # before the search
    found = {}
    with progress(not as_json) as reporter:
        for name in metrics:
            record = search_and_record(matrix, name, settings, margin, reporter, chosen)
            paths[name].write_text(json.dumps(record, indent=1) + "\n")
            found[name] = {key: record[key] for key in ("train_tau", "heldout_tau", "random_heldout_tau_mean")} | {
                "size": size, "out": str(paths[name])}
            if as_json:
                continue
            console.print(f"{name}: {size} prompts, training tau {record['train_tau']:.3f}, {_judged(record, size)} "
                          f"-> {paths[name]}")
    if as_json:
        echo_json(found)


def _judged(record: dict, size: int) -> str:
    if record["heldout_tau"] is None:
        return "no held-out models (judge it on your own)"
    return (f"held-out tau {record['heldout_tau']:.3f} on {len(record['split']['heldout'])} models (random {size}: "
            f"{record['random_heldout_tau_mean']:.3f})")


def _subset_path(out: Optional[Path], run: Optional[Path], metric: str, size: int, metrics: int) -> Path:
    """Where one metric's subset goes: into the fresh ``run`` folder without ``--out``, else ``--out`` (with
    ``_<metric>`` added when several metrics are searched); never the committed results unless named."""
    if out is None:
        return run / f"subset_{metric}_{size}.json"
    return out if metrics == 1 else out.with_name(f"{out.stem}_{metric}{out.suffix or '.json'}")


@app.command("apply")
def apply_subset(
    subset: Path = typer.Option(..., help="A subset JSON from `effigy flasheval search`."),
    scores: Path = typer.Option(MATRIX, help="The matrix the subset was searched on (the known ranking)."),
    name: str = typer.Option("new variant"),
    model: str = typer.Option("t2i-shapes", help="The generator of the new variant: t2i-shapes or t2i-shapes-lcm."),
    generator_alias: Optional[str] = typer.Option(None, "--generator", hidden=True),
    sampler: str = typer.Option("dpm-solver++"),
    steps: int = typer.Option(20, min=1, max=50),
    guidance: float = typer.Option(3.0, min=0.0, callback=finite),
    recipe: Optional[str] = typer.Option(None, help="A quantization recipe."),
    allocation: Optional[str] = typer.Option(None, help="The allocation JSON of a mixed-precision recipe."),
    fastattn: Optional[float] = typer.Option(None, min=0.0, callback=finite, help="A DiTFastAttn threshold."),
    weight_noise: Optional[float] = typer.Option(None, min=0.0, callback=finite),
    as_json: bool = JSON,
) -> None:
    """Score one new variant on the subset's prompts and place it among the matrix's variants."""
    from effigy.evaluate.flasheval import ScoreMatrix
    from effigy.evaluate.flasheval.apply import place_variant, read_subset
    from effigy.evaluate.flasheval.variants import VariantSpec

    generator = deprecated(generator_alias, "--generator", "--model", model)
    record = read_subset(subset)
    matrix = ScoreMatrix.load(scores)
    spec = VariantSpec(name, generator, sampler, steps, guidance, recipe, allocation, fastattn, weight_noise)
    placed = place_variant(matrix, record, spec)
    if as_json:
        echo_json({"name": name, "metric": record["metric"], "size": record["size"], **placed})
        return
    console.print(f"{name}: {record['metric']} {placed['score']:.4f} on {record['size']} prompts in "
                  f"{placed['seconds']:.1f} s; rank {placed['rank']} of {placed['of']} "
                  f"(between {placed['above']!r} and {placed['below']!r})")

