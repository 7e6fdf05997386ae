"""Score matrices: the effigy file round trip, and matrices a user already has (CSV, NPZ, FlashEval's layout)."""
import json

import numpy as np
import pytest

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval import ScoreMatrix, read_scores


def test_flasheval_per_model_json_layout_with_an_incomplete_model_left_out(tmp_path, caplog):
    rng = np.random.default_rng(0)
    prompts = [f"{i:05d}" for i in range(30)]
    for model in ("sd-v1-5_dpm_20", "sd-v1-5_ddim_50", "vq-diffusion"):
        (tmp_path / f"{model}.json").write_text(json.dumps({p: float(rng.random()) for p in prompts}))
    (tmp_path / "partial.json").write_text(json.dumps({p: 0.5 for p in prompts[:20]}))
    matrix = read_scores(tmp_path, "clip")
    assert matrix.names == ["sd-v1-5_ddim_50", "sd-v1-5_dpm_20", "vq-diffusion"]
    assert matrix.table("clip").shape == (3, 30) and matrix.provenance["left_out"] == ["partial"]
    assert "partial" in caplog.text and "left out" in caplog.text
    stored = json.loads((tmp_path / "vq-diffusion.json").read_text())
    assert matrix.table("clip")[2, 7] == stored[matrix.prompts[7]["id"]]


def test_flasheval_released_tree_with_family_folders_an_empty_file_and_a_misfiled_copy(tmp_path, caplog):
    """``ImageReward/<family>/ImageReward-<config>-score.json``: models named family/config (the same config in two
    families stays two models), an empty file and a copy from another prompt set (fewer ids, some shared) left out
    with a line each."""
    rng = np.random.default_rng(0)
    prompts = [str(i) for i in range(40)]
    root = tmp_path / "ImageReward"
    for family in ("sd1.5", "dreamlike"):
        (root / family).mkdir(parents=True)
        for config in ("DDIM10step-fp", "DPM20step-fp"):
            scores = {p: float(rng.random()) for p in prompts}
            (root / family / f"ImageReward-{config}-score.json").write_text(json.dumps(scores))
    (root / "sd1.5" / "ImageReward-DPM20step-_8-score.json").write_text("{}")
    misfiled = {str(i): 0.1 for i in range(30, 60)}  # another prompt set's copy: 10 of its ids collide with these
    (root / "dreamlike" / "ImageReward-PNDM50step-fp-score.json").write_text(json.dumps(misfiled))
    matrix = read_scores(root, "ImageReward")
    assert matrix.names == ["dreamlike/DDIM10step-fp", "dreamlike/DPM20step-fp", "sd1.5/DDIM10step-fp",
                            "sd1.5/DPM20step-fp"]
    assert matrix.table("ImageReward").shape == (4, 40)
    assert matrix.provenance["left_out"] == ["dreamlike/PNDM50step-fp", "sd1.5/DPM20step-_8"]
    assert "'sd1.5/DPM20step-_8' is scored on 0 of 40" in caplog.text
    assert "'dreamlike/PNDM50step-fp' is scored on 30 of 40" in caplog.text
    with pytest.raises(ScoreMatrixError, match="one folder down"):
        read_scores((tmp_path / "empty").mkdir() or tmp_path / "empty")


def _released_tree(root, families=("a", "b", "c"), configs=("DDIM10step-fp", "DPM20step-fp"), prompts=40):
    rng = np.random.default_rng(1)
    for family in families:
        (root / family).mkdir(parents=True)
        for config in configs:
            scores = {str(i): float(rng.random()) for i in range(prompts)}
            (root / family / f"{root.name}-{config}-score.json").write_text(json.dumps(scores))
    return root


def test_search_on_the_released_tree_names_the_metric_by_its_folder_or_by_metric(monkeypatch, capsys, caplog,
                                                                               tmp_path):
    from tests.test_cli import run_cli

    tree = _released_tree(tmp_path / "HPS")
    (tree / "a" / "HPS-DPM20step-_8-score.json").write_text("{}")
    for extra in ([], ["--metric", "HPS"]):
        caplog.clear()
        code, out, err = run_cli(monkeypatch, capsys, "flasheval", "search", "--scores", str(tree), "--size", "5",
                               "--rounds", "1", "--subsets", "10", "--out", str(tmp_path / "subset.json"), "--json",
                               *extra)
        assert code == 0 and list(json.loads(out)) == ["HPS"]
        lines = [r.getMessage() for r in caplog.records if "DPM20step-_8" in r.getMessage()] + [
            line for line in err.splitlines() if "DPM20step-_8" in line]
        assert len(lines) == 1 and "scored on 0 of 40" in lines[0]  # one line per file left out
    assert read_scores(tree, "hps-v2").metrics == ["hps-v2"]


def test_csv_and_npz_matrices(tmp_path):
    (tmp_path / "s.csv").write_text("model,p1,p2,p3\na,1,2,3\nb,3,2,1\nc,1,1,\n")
    matrix = read_scores(tmp_path / "s.csv")
    assert matrix.names == ["a", "b"] and matrix.provenance["left_out"] == ["c"]
    assert matrix.table("score").tolist() == [[1, 2, 3], [3, 2, 1]]
    np.savez(tmp_path / "s.npz", scores=np.arange(6.0).reshape(2, 3), models=np.array(["x", "y"]))
    assert read_scores(tmp_path / "s.npz").table("score")[1].tolist() == [3, 4, 5]


def test_the_effigy_matrix_round_trip(tmp_path):
    matrix = ScoreMatrix({"adherence": np.eye(3)[:2], "clip_score": np.ones((2, 3))}, [{"name": "a"}, {"name": "b"}],
                         [{"id": str(i)} for i in range(3)], {"seed": 0})
    loaded = read_scores(matrix.save(tmp_path / "m"))
    assert loaded.metrics == ["adherence", "clip_score"] and loaded.provenance == {"seed": 0}
    assert np.array_equal(loaded.table("adherence"), matrix.table("adherence"))
    with pytest.raises(ScoreMatrixError, match="not in this matrix"):
        loaded.table("fid")


def test_bad_score_files_are_one_clear_error(tmp_path):
    with pytest.raises(ScoreMatrixError, match="no score file"):
        read_scores(tmp_path / "missing.csv")
    (tmp_path / "x.txt").write_text("1")
    with pytest.raises(ScoreMatrixError, match="unknown score file type"):
        read_scores(tmp_path / "x.txt")
    (tmp_path / "bad.csv").write_text("model,p1,p2\na,1,oops\nb,1,2\n")
    with pytest.raises(ScoreMatrixError, match="not a number"):
        read_scores(tmp_path / "bad.csv")
    (tmp_path / "pickle.npz").write_bytes(b"not a zip")
    with pytest.raises(ScoreMatrixError, match="NPZ"):
        read_scores(tmp_path / "pickle.npz")
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.json").write_text(json.dumps({"p": "high"}))
    with pytest.raises(ScoreMatrixError, match="numeric score"):
        read_scores(folder)
    (tmp_path / "m.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ScoreMatrixError, match="not an effigy score matrix"):
        read_scores(tmp_path / "m.json")
    with pytest.raises(ScoreMatrixError, match="NaN"):
        ScoreMatrix({"s": np.array([[np.nan, 1.0]])}, [{"name": "a"}], [{"id": "0"}, {"id": "1"}])


def _long_rows(models=("sd/DDIM10", "sd/DPM20", "vq"), prompts=6, metrics=("ImageReward", "HPS")):
    """One row per score, as an evaluation harness logs them; the score encodes where it came from."""
    return [{"model": m, "prompt": f"p{p}", "metric": metric, "score": 10 * i + p + (0.5 if metric == "HPS" else 0)}
            for metric in metrics for i, m in enumerate(models) for p in range(prompts)]


def _write_long(path, rows):
    if path.suffix == ".csv":
        path.write_text("Model,prompt,metric,score\n" + "".join(
            f"{r['model']},{r['prompt']},{r['metric']},{r['score']}\n" for r in rows))
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({k: [r[k] for r in rows] for k in rows[0]}), path)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_long_tables_one_row_per_score_in_each_format(tmp_path, caplog, suffix):
    """A model missing one prompt in one metric is left out of every metric with a line, not padded; each table
    holds exactly the scores given, in model x prompt order."""
    rows = [r for r in _long_rows() if not (r["model"] == "vq" and r["metric"] == "HPS" and r["prompt"] == "p3")]
    matrix = read_scores(_write_long(tmp_path / f"scores{suffix}", rows))
    assert matrix.metrics == ["ImageReward", "HPS"] and matrix.names == ["sd/DDIM10", "sd/DPM20"]
    assert matrix.table("ImageReward").tolist() == [[float(p) for p in range(6)], [10.0 + p for p in range(6)]]
    assert matrix.table("HPS")[1, 2] == 12.5 and matrix.provenance["left_out"] == ["vq"]
    assert "'vq' is scored on 5 of 6 prompts" in caplog.text
    one = read_scores(tmp_path / f"scores{suffix}", "ImageReward")
    assert one.metrics == ["ImageReward"] and one.names == ["sd/DDIM10", "sd/DPM20", "vq"]


def test_long_table_without_a_metric_column_and_its_bad_rows(tmp_path):
    (tmp_path / "s.csv").write_text("model,prompt,score\na,1,0.5\na,2,0.7\nb,1,0.1\nb,2,0.2\n")
    assert read_scores(tmp_path / "s.csv", "clip").table("clip").tolist() == [[0.5, 0.7], [0.1, 0.2]]
    assert read_scores(tmp_path / "s.csv").metrics == ["score"]
    (tmp_path / "twice.jsonl").write_text('{"model": "a", "prompt": 1, "score": 1}\n' * 2)
    with pytest.raises(ScoreMatrixError, match="row 2: model 'a' is scored twice on prompt '1'"):
        read_scores(tmp_path / "twice.jsonl")
    (tmp_path / "nan.csv").write_text("model,prompt,score\na,1,nan\n")
    with pytest.raises(ScoreMatrixError, match="row 2: score 'nan' is not a number"):
        read_scores(tmp_path / "nan.csv")
    (tmp_path / "other.jsonl").write_text('{"model": "a", "prompt": 1, "metric": "fid", "score": 1}\n')
    with pytest.raises(ScoreMatrixError, match="no score rows for metric 'clip'"):
        read_scores(tmp_path / "other.jsonl", "clip")
    (tmp_path / "broken.jsonl").write_text("{not json\n")
    with pytest.raises(ScoreMatrixError, match="not a JSONL score table"):
        read_scores(tmp_path / "broken.jsonl")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"model": ["a"], "score": [1.0]}), tmp_path / "cols.parquet")
    with pytest.raises(ScoreMatrixError, match="lacks prompt"):
        read_scores(tmp_path / "cols.parquet")
