"""A searched subset in use: the benches' --subset FILE reads its prompts back from the seeded world."""
import json

import numpy as np
import pytest

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval import ScoreMatrix
from effigy.evaluate.flasheval.search import SearchSettings, search_and_record
from effigy.evaluate.suites import SamplingSettings, evaluation_scenes
from effigy.evaluate.t2i import prompt_set


def _subset(tmp_path, prompt_set_record=True):
    scenes = prompt_set(40, "heldout", 0)
    table = np.random.default_rng(0).random((8, 40))
    matrix = ScoreMatrix({"adherence": table}, [{"name": f"v{i}"} for i in range(8)],
                         [{"id": str(i), "text": s.caption, "kind": s.kind} for i, s in enumerate(scenes)],
                         {"prompt_set": {"count": 40, "split": "heldout", "seed": 0}} if prompt_set_record else {})
    record = search_and_record(matrix, "adherence", SearchSettings(size=6, rounds=2, subsets=50))
    path = tmp_path / "subset.json"
    path.write_text(json.dumps(record))
    return path, record, scenes


def test_a_bench_evaluates_on_the_subsets_prompts(tmp_path):
    path, record, scenes = _subset(tmp_path)
    picked = evaluation_scenes(SamplingSettings(model="t2i-shapes", prompts=f"subset:{path}"))
    assert [s.caption for s in picked] == [scenes[i].caption for i in record["prompt_indices"]]
    assert len(evaluation_scenes(SamplingSettings(model="t2i-shapes", samples_per_class=2))) == 20


def test_a_subset_that_does_not_fit_the_world_is_refused(tmp_path):
    path, record, _ = _subset(tmp_path)
    record["prompts"][0]["text"] = "a purple elephant"
    path.write_text(json.dumps(record))
    with pytest.raises(ScoreMatrixError, match="another version of the shapes world"):
        evaluation_scenes(SamplingSettings(prompts=f"subset:{path}"))
    external, _, _ = _subset(tmp_path, prompt_set_record=False)
    with pytest.raises(ScoreMatrixError, match="external matrix"):
        evaluation_scenes(SamplingSettings(prompts=f"subset:{external}"))
    with pytest.raises(ScoreMatrixError, match="subset:FILE"):
        evaluation_scenes(SamplingSettings(prompts=str(path)))
