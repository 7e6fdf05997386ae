"""Model splits: seeded shares, named training models, and FlashEval's own train_id.pth read without running code."""
import json
import pickle

import numpy as np
import pytest
import torch

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval.splits import Split, read_split, release_model_order

CONFIG = """model_names: 'sd1.4, dreamlike'
solver_names: 'DDIM10, DPM20'
enames: 'fp'
q_model_names: 'sd1.4'
q_solver_names: 'DDIM10'
q_enames: '_6, _8'
"""
ORDER = ["sd1.4/DDIM10step-fp", "sd1.4/DPM20step-fp", "dreamlike/DDIM10step-fp", "dreamlike/DPM20step-fp",
         "sd1.4/DDIM10step-_6", "sd1.4/DDIM10step-_8"]


def _release(tmp_path, train_ids):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "get_score.yaml").write_text(CONFIG)
    folder = tmp_path / "Image_score" / "ranking_different_model"
    folder.mkdir(parents=True)
    torch.save(torch.tensor(train_ids), folder / "train_id.pth")
    return folder / "train_id.pth"


def test_the_paper_split_maps_train_ids_through_the_release_order(tmp_path, caplog):
    assert release_model_order(_release(tmp_path, [4, 0, 3]).parents[2] / "configs" / "get_score.yaml") == ORDER
    names = sorted(ORDER[:5])  # the matrix lacks sd1.4/DDIM10step-_8 (incomplete in the release, say)
    split = read_split(tmp_path / "Image_score" / "ranking_different_model" / "train_id.pth", names)
    assert split.names(names)["train"] == sorted(["sd1.4/DDIM10step-_6", "sd1.4/DDIM10step-fp",
                                                  "dreamlike/DPM20step-fp"])
    assert split.names(names)["heldout"] == ["dreamlike/DDIM10step-fp", "sd1.4/DPM20step-fp"]


def test_a_pickled_object_in_place_of_train_ids_is_refused_not_run(tmp_path):
    path = _release(tmp_path, [0, 1])

    class Payload:
        def __reduce__(self):
            return (exec, ("import pathlib; pathlib.Path('ran').write_text('yes')",))

    torch.save({"ids": [0, 1]}, path)  # a dict is not an index tensor
    with pytest.raises(ScoreMatrixError, match="1-D integer tensor"):
        read_split(path, ORDER)
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ScoreMatrixError, match="without running code"):
        read_split(path, ORDER)
    assert not (tmp_path / "ran").exists() and not list(tmp_path.glob("**/ran"))
    torch.save(torch.tensor([0, 9]), path)
    with pytest.raises(ScoreMatrixError, match="do not fit the release's 6"):
        read_split(path, ORDER)


def test_seeded_splits_named_splits_and_searching_on_every_model(tmp_path):
    halves = Split.halves(10, seed=3)
    assert halves == Split.random(10, 3, 0.5) and len(halves.train) == 5
    assert sorted(halves.train + halves.heldout) == list(range(10))
    everyone = Split.random(10, 3, 0.0)
    assert everyone.train == list(range(10)) and everyone.heldout == []
    assert len(Split.random(10, 3, 0.3).heldout) == 3
    (tmp_path / "s.json").write_text(json.dumps({"split": {"train": ["a", "c", "ghost"], "heldout": ["b"]}}))
    split = read_split(tmp_path / "s.json", ["a", "b", "c", "d"])
    assert split.train == [0, 2] and split.heldout == [1, 3]
    with pytest.raises(ScoreMatrixError, match="at least two training models"):
        Split.random(3, 0, 0.5)


def test_search_on_every_model_writes_no_heldout_tau(tmp_path):
    from effigy.evaluate.flasheval import ScoreMatrix
    from effigy.evaluate.flasheval.search import SearchSettings, search_and_record

    table = np.random.default_rng(0).random((6, 30))
    matrix = ScoreMatrix({"s": table}, [{"name": f"m{i}"} for i in range(6)], [{"id": str(i)} for i in range(30)])
    record = search_and_record(matrix, "s", SearchSettings(size=5, rounds=2, subsets=20), heldout_fraction=0.0)
    assert record["heldout_tau"] is None and record["random_heldout_tau_mean"] is None
    assert record["split"]["train"] == [f"m{i}" for i in range(6)] and record["split"]["heldout"] == []
