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
                                      search_seeds=2, rounds=3, subsets=100, timing_variant="unipc 2 steps")
    result = run_flasheval_bench(settings)
    for data in result["metrics"].values():
        assert set(data["by_size"]) == {5, 10, 20}
        for methods in data["by_size"].values():
            assert set(methods) == {"flasheval", "random", "stratified", "anchor points"}
            assert all(-1 <= m["mean"] <= 1 and m["p5"] <= m["mean"] <= m["p95"] for m in methods.values())
        assert data["claim"]["size"] is None or data["claim"]["size"] in (5, 10, 20, 40)
    assert not set(result["split"]["train"]) & set(result["split"]["heldout"])
    timing = result["timing"]
    assert timing["subset_prompts"] == 10 and timing["full_prompts"] == PROMPTS and timing["full_seconds"] > 0
    paths = write_flasheval_report(result, tmp_path, "flasheval_t2i_shapes", "effigy bench flasheval")
    assert paths["chart"].stat().st_size > 1000 and "| adherence | 10 |" in paths["markdown"].read_text()


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
                                      random_sizes=(5, 10, 20), random_draws=20, search_seeds=2, rounds=2,
                                      subsets=50)
    result = run_flasheval_bench(settings)
    assert result["model"] == "ImageReward" and list(result["metrics"]) == ["ImageReward"]
    assert result["timing"] is None and len(result["split"]["heldout"]) == 5
    paths = write_flasheval_report(result, tmp_path, "flasheval_imagereward", "effigy bench flasheval")
    text = paths["markdown"].read_text()
    assert "# FlashEval benchmark: ImageReward" in text and "Ranking a new variant" not in text
