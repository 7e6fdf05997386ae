"""The FlashEval bench end to end on a small synthetic matrix over real shapes prompts, and the CLI around it."""
import json
import sys

import numpy as np
import pytest

from effigy import cli
from effigy.bench.flasheval import FlashEvalBenchSettings, run_flasheval_bench
from effigy.bench.flasheval_report import write_flasheval_report
from effigy.evaluate.flasheval import ScoreMatrix
from effigy.evaluate.t2i import prompt_set

PROMPTS = 60


def synthetic_matrix(path):
    rng = np.random.default_rng(0)
    quality = np.linspace(0, 1, 12)
    scale = np.where(np.arange(PROMPTS) < 8, 5.0, 1.0)  # a few discriminative prompts
    table = scale * quality[:, None] + rng.standard_normal((12, PROMPTS))
    scenes = prompt_set(PROMPTS, "heldout", 0)
    prompts = [{"id": f"heldout-0-{i:05d}", "text": s.caption, "kind": s.kind} for i, s in enumerate(scenes)]
    matrix = ScoreMatrix({"adherence": table, "clip_score": 10 * table}, [{"name": f"v{i}"} for i in range(12)],
                         prompts, {"prompt_set": {"count": PROMPTS, "split": "heldout", "seed": 0}})
    return matrix.save(path)


def test_the_bench_compares_every_method_on_held_out_variants_and_times_a_new_variant(tmp_path):
    settings = FlashEvalBenchSettings(matrix=str(synthetic_matrix(tmp_path / "m")), sizes=(5, 10, 20), claim_size=10,
                                      claim_random_size=20, random_sizes=(5, 10, 20, 40), random_draws=20,
                                      splits=2, rounds=3, subsets=100, timing_variant="unipc 2 steps")
    result = run_flasheval_bench(settings)
    for data in result["metrics"].values():
        assert set(data["by_size"]) == {5, 10, 20} and set(data["random_curve"]) == {5, 10, 20, 40}
        for methods in data["by_size"].values():
            assert set(methods) == {"flasheval", "random", "stratified", "anchor points"}
            for method in methods.values():
                assert method["splits"] == 2
                assert all(-1 <= v["min"] <= v["mean"] <= v["max"] <= 1 for k, v in method.items() if k != "splits")
        for measure in ("kd", "tau_b"):
            claim = data["claim"][measure]
            assert claim["random_size_matched"] is None or 5 <= claim["random_size_matched"] <= 40
            assert claim["meets_claim"] == (claim["flasheval"] >= claim["random_at_claim_size"])
    for split in result["splits"].values():
        assert not set(split["train"]) & set(split["heldout"]) and len(split["heldout"]) == 6
    assert result["splits"]["seed 0"] != result["splits"]["seed 1"]
    timing = result["timing"]
    assert timing["subset_prompts"] == 10 and timing["full_prompts"] == PROMPTS and timing["full_seconds"] > 0
    paths = write_flasheval_report(result, tmp_path, "flasheval_t2i_shapes", "effigy bench flasheval")
    text = paths["markdown"].read_text()
    assert paths["chart"].stat().st_size > 1000 and "| adherence | 10 |" in text and "margin KD" in text


def run_cli(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["effigy", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return exit_info.value.code or 0, capsys.readouterr()


def test_search_then_apply_from_the_cli(tmp_path, monkeypatch, capsys):
    matrix = synthetic_matrix(tmp_path / "m")
    code, _ = run_cli(monkeypatch, capsys, "flasheval", "search", "--scores", str(matrix), "--metric", "adherence",
                      "--size", "10", "--rounds", "3", "--subsets", "100", "--out", str(tmp_path / "subset.json"))
    assert code == 0
    record = json.loads((tmp_path / "subset.json").read_text())
    assert record["size"] == 10 and -1 <= record["heldout_tau"] <= 1 and len(record["prompts"]) == 10
    assert not set(record["split"]["train"]) & set(record["split"]["heldout"])
    code, captured = run_cli(monkeypatch, capsys, "flasheval", "apply", "--subset", str(tmp_path / "subset.json"),
                             "--scores", str(matrix), "--steps", "2", "--name", "dpm 2")
    assert code == 0 and "rank" in captured.err and "of 13" in captured.err


def test_the_bench_runs_on_an_external_matrix_without_a_timing_section(tmp_path):
    """FlashEval's released tree: the metric and the results' name from its folder; no generator to time."""
    rng = np.random.default_rng(0)
    root = tmp_path / "ImageReward"
    quality = np.linspace(0, 1, 10)
    for index, q in enumerate(quality):
        family = root / f"family{index % 2}"
        family.mkdir(parents=True, exist_ok=True)
        scores = {str(p): float(q * (3.0 if p < 6 else 0.5) + rng.standard_normal()) for p in range(40)}
        (family / f"ImageReward-config{index}-score.json").write_text(json.dumps(scores))
    settings = FlashEvalBenchSettings(matrix=str(root), sizes=(5, 10), claim_size=5, claim_random_size=10,
                                      random_sizes=(5, 10, 20), random_draws=20, splits=2, rounds=2, subsets=50)
    result = run_flasheval_bench(settings)
    assert result["model"] == f"{tmp_path.name}-ImageReward" and list(result["metrics"]) == ["ImageReward"]
    assert result["timing"] is None and len(result["splits"]["seed 0"]["heldout"]) == 5
    assert set(result["metrics"]["ImageReward"]["by_size"][5]) == {"flasheval", "random", "anchor points"}
    paths = write_flasheval_report(result, tmp_path, "flasheval_imagereward", "effigy bench flasheval")
    text = paths["markdown"].read_text()
    assert f"# FlashEval benchmark: {tmp_path.name}-ImageReward" in text and "Ranking a new variant" not in text


def test_a_named_split_and_a_released_subset_are_judged_beside_the_seeded_splits(tmp_path):
    """The named split is reported on its own; the released subset's tau is its own ranking of the held-out models
    (here the informative prompts, which must beat random subsets of its size)."""
    from effigy.bench.flasheval import random_match_size

    matrix = synthetic_matrix(tmp_path / "m")
    (tmp_path / "split.json").write_text(json.dumps({"train": [f"v{i}" for i in range(0, 12, 2)]}))
    (tmp_path / "released.jsonl").write_text("".join(json.dumps({"id": f"heldout-0-{i:05d}", "caption": "x"}) + "\n"
                                                     for i in range(8)))
    settings = FlashEvalBenchSettings(matrix=str(matrix), metric="adherence", sizes=(8,), claim_size=8,
                                      claim_random_size=20, random_sizes=(8, 20), random_draws=20, splits=2,
                                      rounds=2, subsets=50, split_file=str(tmp_path / "split.json"),
                                      released=str(tmp_path / "released.jsonl"), timing_variant="unipc 2 steps")
    result = run_flasheval_bench(settings)
    data = result["metrics"]["adherence"]
    named = data["named_split"]
    assert named["name"] == "split.json" and result["splits"]["split.json"]["heldout"] == [f"v{i}" for i in
                                                                                            range(1, 12, 2)]
    assert named["released"]["kd"] > named["random_curve"][8]["kd"]
    assert data["released"]["splits"] == 2
    assert "beats_released" in named["claim"]["kd"] and "beats_released" in data["claim"]["tau_b"]
    assert random_match_size({10: 0.5, 100: 0.9}, 0.7) == pytest.approx(10 ** 1.5)
    assert random_match_size({10: 0.5, 100: 0.9}, 0.95) is None and random_match_size({10: 0.5}, 0.2) == 10


def test_the_committed_shapes_results_of_the_earlier_protocol_are_reproduced_exactly():
    """Issue 43 changed the bench's protocol, not the search: on the earlier protocol's split and search seeds the
    search still gives the committed held-out taus, to the last bit."""
    from pathlib import Path

    from effigy.evaluate.flasheval import read_scores
    from effigy.evaluate.flasheval.search import SearchSettings, Split, default_margin, flasheval_search, heldout_tau

    results = Path(__file__).resolve().parents[2] / "benchmarks/results/flasheval/t2i-shapes"
    old = json.loads((results / "protocol-1/flasheval_t2i_shapes.json").read_text())
    matrix = read_scores(results / "score_matrix.json")
    for metric in matrix.metrics:
        table = matrix.table(metric)
        split = Split.halves(len(table), 0)
        margin = default_margin(table[split.train])
        taus = [heldout_tau(table, split, flasheval_search(table, split, margin, SearchSettings(size=50, seed=seed)),
                            margin) for seed in range(3)]
        assert float(np.mean(taus)) == old["metrics"][metric]["by_size"]["50"]["flasheval"]["mean"]
