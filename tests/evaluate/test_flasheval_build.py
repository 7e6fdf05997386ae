"""Building a score matrix: the local pool and Ray agree bit for bit, and an interrupted build resumes."""
import numpy as np
import pytest

from effigy.errors import ScoreMatrixError
from effigy.evaluate.flasheval.build import MatrixPlan, build_matrix, variants_from_file
from effigy.evaluate.flasheval.matrix import ScoreMatrix
from effigy.evaluate.flasheval.variants import VariantSpec, default_variants

TINY = MatrixPlan((VariantSpec("dpm 2", steps=2), VariantSpec("euler 2", sampler="euler", steps=2),
                   VariantSpec("student 1", generator="t2i-shapes-lcm", steps=1)), prompts=6, shard_size=3)


def counting():
    totals = []
    return totals, lambda _description, total: (totals.append(total), lambda: None)[1]


def test_the_local_pool_and_ray_build_the_same_matrix_and_a_build_resumes_from_its_cache(tmp_path):
    local = build_matrix(TINY, tmp_path / "local", "local", workers=2)
    on_ray = build_matrix(TINY, tmp_path / "ray", "ray", workers=2)
    for metric in local.metrics:
        assert local.table(metric).shape == (3, 6)
        assert np.array_equal(local.table(metric), on_ray.table(metric))  # bit for bit
    assert not np.array_equal(local.table("clip_score")[0], local.table("clip_score")[2])  # variants differ

    jobs = sorted((tmp_path / "local").glob("*.safetensors"))
    assert len(jobs) == 6  # 3 variants x 2 shards
    jobs[0].unlink()  # an interrupted build: one job never finished
    jobs[1].write_bytes(jobs[1].read_bytes()[:40])  # a truncated job
    from safetensors.numpy import save_file
    save_file({"adherence": np.zeros(7), "clip_score": np.zeros(3)}, str(jobs[2]))  # a job of other shapes
    totals, progress = counting()
    resumed = build_matrix(TINY, tmp_path / "local", "local", workers=0, progress=progress)
    assert totals == [3]  # only the missing and the damaged jobs ran again
    assert np.array_equal(resumed.table("adherence"), local.table("adherence"))

    path = resumed.save(tmp_path / "matrix")
    loaded = ScoreMatrix.load(path)
    assert loaded.names == ["dpm 2", "euler 2", "student 1"] and loaded.prompts == resumed.prompts
    assert np.array_equal(loaded.table("clip_score"), resumed.table("clip_score"))
    assert [v.name for v in variants_from_file(path)] == loaded.names


def test_the_default_variants_cover_what_the_compression_loop_chooses_between():
    specs = default_variants()
    assert len(specs) >= 40 and len({s.name for s in specs}) == len(specs)
    assert {s.sampler for s in specs} == {"dpm-solver++", "ddim", "unipc", "euler"}
    assert {s.steps for s in specs if s.generator == "t2i-shapes"} >= {2, 50}
    assert {s.guidance for s in specs} >= {1.0, 7.0}
    assert any(s.recipe and "mp" in s.recipe for s in specs) and any(s.recipe == "mixdq-w4a8" for s in specs)
    assert any(s.fastattn for s in specs) and any(s.weight_noise for s in specs)


def test_bad_plans_and_variants_are_one_clear_error(tmp_path):
    with pytest.raises(ScoreMatrixError, match="share a name"):
        MatrixPlan((VariantSpec("a"), VariantSpec("a")))
    with pytest.raises(ScoreMatrixError, match="sampler"):
        VariantSpec("a", sampler="heun")
    with pytest.raises(ScoreMatrixError, match="one of recipe"):
        VariantSpec("a", recipe="rtn-w4a8", weight_noise=0.1)
    with pytest.raises(ScoreMatrixError, match="executor"):
        build_matrix(TINY, tmp_path, "dask")
    (tmp_path / "variants.json").write_text("[]")
    with pytest.raises(ScoreMatrixError, match="non-empty"):
        variants_from_file(tmp_path / "variants.json")
