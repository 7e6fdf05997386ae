import pytest

import effigy.bench.ada3d as bench
from effigy.bench.ada3d import Ada3DBenchSettings, dominance, run_ada3d_bench
from effigy.bench.ada3d_report import frontier, write_ada3d_report
from effigy.lidar.ada3d import Ada3D, Ada3DConfig, sparsity_preserving
from effigy.models.lidar.centerpoint import CenterPoint
from tests.lidar import TINY, as_if_trained


@pytest.fixture
def tiny_models(monkeypatch):
    dense = as_if_trained(CenterPoint(TINY).eval())
    models = {"lidar-centerpoint": dense,
              "lidar-ada3d": Ada3D(sparsity_preserving(CenterPoint(TINY)), Ada3DConfig()).eval()}
    monkeypatch.setattr(bench, "load_zoo_model", lambda name: (models[name], None))
    return models


def test_the_bench_writes_every_row_with_costs_and_ap(tiny_models, tmp_path):
    settings = Ada3DBenchSettings(test_frames=2, latency_frames=1, latency_repeats=1, measure_memory=False,
                                  keeps=((0.6, 0.3), (0.8, 0.5)), sweep_3d=(0.6,), sweep_2d=(0.3, 0.5))
    result = run_ada3d_bench(settings)
    assert result["choice"]["chosen_on"] == "given" and result["choice"]["keep"] == [0.6, 0.3]
    assert sorted((r["family"], r["keep_2d"]) for r in result["sweep"]) == [
        (f, k) for f in ("ada3d", "distance", "random") for k in (0.3, 0.5)]
    assert result["dominance"]["macs_ratio"]["random"]["costs"] == len({r["macs_ratio"] for r in result["sweep"]})
    rows = {r["variant"]: r for r in result["rows"]}
    dense = rows["dense detector"]
    assert dense["voxels_kept"] == 1 and dense["macs_ratio"] == 1
    main = rows["ada3d 3D 0.6 / 2D 0.3"]
    assert main["voxels_kept"] < 1 and main["macs_3d_ratio"] < 1 and main["macs_2d_ratio"] < 1
    assert max(main["density_after_stage"]) < min(rows["filter on the dense detector (plain BN) 0.6 / 0.3"]
                                                   ["density_after_stage"])
    assert {"random filtering 0.6 / 0.3", "distance filtering 0.6 / 0.3", "ada3d 3D only 0.6"} <= rows.keys()
    assert all(0 <= r["map_iou"] <= 1 and r["ms_total"] > 0 for r in rows.values())
    paths = write_ada3d_report(result, tmp_path, "effigy bench ada3d")
    assert paths["picture"].exists() and "BEV average precision" in paths["markdown"].read_text()
    assert f"]({paths['picture'].name})" in paths["markdown"].read_text()
    assert paths["curve"].exists() and f"]({paths['curve'].name})" in paths["markdown"].read_text()


def test_without_given_keeps_the_main_one_is_the_best_on_validation_within_the_budget(tiny_models):
    settings = Ada3DBenchSettings(test_frames=2, val_frames=2, latency_frames=1, latency_repeats=1,
                                  measure_memory=False, sweep_3d=(0.5, 1.0), sweep_2d=(0.3,), max_voxels=0.8,
                                  max_first_density=1.0)
    result = run_ada3d_bench(settings)
    choice = result["choice"]
    assert choice["chosen_on"] == "validation" and choice["val_frames"] == 2
    candidates = choice["rows"][1:]
    assert len(candidates) == 2 and {r["within_budget"] for r in candidates} == {True, False}
    best = max((r for r in candidates if r["within_budget"]), key=lambda r: r["map_iou"])
    assert choice["keep"] == [best["keep_3d"], best["keep_2d"]] and best["voxels_kept"] <= 0.8
    main = next(r for r in result["rows"] if r["family"] == "ada3d")
    assert (main["keep_3d"], main["keep_2d"]) == tuple(choice["keep"])


def test_dominance_compares_the_frontiers_at_every_sampled_cost():
    sweep = [{"family": "ada3d", "macs_ratio": 0.2, "map_iou": 0.8}, {"family": "ada3d", "macs_ratio": 0.5, "map_iou": 0.9},
             {"family": "random", "macs_ratio": 0.3, "map_iou": 0.7}, {"family": "random", "macs_ratio": 0.6, "map_iou": 0.95},
             {"family": "distance", "macs_ratio": 0.1, "map_iou": 0.5}]
    verdict = dominance(sweep, "macs_ratio")  # costs sampled: 0.1, 0.2, 0.3, 0.5, 0.6
    assert verdict["random"] == {"costs": 5, "compared": 3, "ada3d_higher": 2, "baseline_only": 0}
    assert verdict["distance"] == {"costs": 5, "compared": 4, "ada3d_higher": 4, "baseline_only": 1}
    assert frontier([(0.5, 0.9), (0.2, 0.8), (0.3, 0.7)]) == [(0.2, 0.8), (0.5, 0.9)]


def test_a_detector_other_than_the_plain_one_gets_the_plain_one_as_a_reference_row(tiny_models):
    """An Ada3D model on another detector (the SP-BN one) is compared with its own dense detector, and the plain
    lidar-centerpoint is a row of its own."""
    from dataclasses import replace

    tiny_models["lidar-centerpoint-spbn"] = CenterPoint(replace(TINY, norm_2d="sparsity-preserving")).eval()
    settings = Ada3DBenchSettings(reference="lidar-centerpoint-spbn", test_frames=2, latency_frames=1,
                                  latency_repeats=1, measure_memory=False, keeps=((0.6, 0.3),), sweep_3d=(0.6,),
                                  sweep_2d=(0.3,))
    assert settings.detector == "lidar-centerpoint" and settings.to_dict()["detector"] == "lidar-centerpoint"
    rows = [r["variant"] for r in run_ada3d_bench(settings)["rows"]]
    assert rows[:2] == ["dense detector", "plain dense detector (lidar-centerpoint-spbn)"]
