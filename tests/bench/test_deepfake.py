import json

import numpy as np
import pytest

import effigy.bench.deepfake as bench
from effigy.bench.deepfake import DeepfakeBenchSettings, average_rows, run_deepfake_bench
from effigy.bench.deepfake_report import write_deepfake_report
from effigy.detect.deepfake.model import DeepfakeConfig, build_model
from effigy.detect.deepfake.protocol import EvalSet
from effigy.worlds.deepfakes import render_forgeries


@pytest.fixture(scope="module")
def small_sets():
    seen = render_forgeries("dev", ["sbi", "swap"], ["phone"], 1, 1)
    unseen = render_forgeries("dev", ["reenact"], ["phone"], 1, 1)
    return [EvalSet("in distribution: sbi+swap", "nothing", seen), EvalSet("unseen family: reenact", "family", unseen)]


def test_the_bench_writes_every_model_test_set_held_out_face_and_attack(monkeypatch, tmp_path, small_sets,
                                                                        quick_synthetic):
    models = {}
    monkeypatch.setattr(bench, "load_zoo_model", lambda name: models.setdefault(
        name, (build_model(DeepfakeConfig(contrastive="plain")), DeepfakeConfig())))
    monkeypatch.setattr(bench, "protocol_sets", lambda config, seed: small_sets)
    result = run_deepfake_bench(DeepfakeBenchSettings(attack_steps=2, attacked_fakes=4, captions=False, explainer=False,
                                                     quantized_generators=()))
    assert {(r["model"], r["test_set"]) for r in result["rows"]} == {
        (m, s.name) for m in ("deepfake-ce", "deepfake-clip", "deepfake-authguard") for s in small_sets}
    assert [r["model"] for r in result["averages"]] == ["deepfake-ce", "deepfake-clip", "deepfake-authguard"]
    assert all(r["fakes_attacked"] == 4 and 0 <= r["pgd_auc"] <= 1 for r in result["pgd"])
    assert len(result["held_out"]) == 6
    generator = result["generator"]  # the stand-in pool is mirrored real crops: near the real ones by every measure
    assert generator["generated"] == 200 and generator["fid_to_test_generated"] > 0
    assert generator["detail_generated"] == pytest.approx(generator["detail_real_test"], rel=0.3)
    paths = write_deepfake_report(result, tmp_path, "effigy bench deepfake")
    assert json.loads(paths["json"].read_text())["benchmark"] == "deepfake"
    assert "Under PGD" in paths["markdown"].read_text() and paths["picture"].stat().st_size > 0
    assert "dit-faces" in paths["markdown"].read_text() and paths["generator_picture"].stat().st_size > 0


def test_averages_take_the_unseen_families_mean():
    rows = [{"model": "m", "contrastive": "none", "held_out": h, "auc": a, "eer": 0.1, "ap": 0.9, "acc": 0.8}
            for h, a in (("nothing", 0.99), ("family", 0.6), ("family", 0.8), ("domain", 0.7))]
    (average,) = average_rows(rows)
    assert average["in_distribution_auc"] == 0.99 and average["unseen_auc"] == pytest.approx(0.7)
    assert average["unseen_domain_auc"] == 0.7 and average["unseen_acc"] == pytest.approx(0.8)


def test_verdict_comparison_pairs_the_images():
    from effigy.bench.deepfake import verdict_comparison

    right = np.array([True, False] * 20)
    same = verdict_comparison(right, right)
    assert same["llm_verdict_accuracy"] == same["encoder_accuracy"] == 0.5 and same["difference_low"] == 0 == same["difference_high"]
    better = verdict_comparison(np.ones(40, bool), right)
    assert better["difference_low"] > 0 and better["images"] == 40


def test_quantized_generators_get_an_auc_each_and_a_paired_interval_against_fp(monkeypatch, quick_synthetic):
    """A stand-in 'quantized' pool of blurred crops: rows per detector and generator, the FP row without a
    difference, the others with an identity-resampled interval around their AUC difference."""
    from scipy import ndimage

    from effigy.bench.deepfake import _Loaded, quantized_generator_rows
    from effigy.worlds.deepfakes import synthetic_crops

    models = {}
    monkeypatch.setattr(bench, "load_zoo_model", lambda name: models.setdefault(
        name, (build_model(DeepfakeConfig(contrastive="none")), DeepfakeConfig())))
    pool = synthetic_crops(0)
    monkeypatch.setattr(bench, "generator_pools", lambda recipes, seed, progress: {
        "FP": pool, "blurred": ndimage.gaussian_filter(pool, (0, 1, 1)).astype(np.float32)})
    section = quantized_generator_rows(DeepfakeBenchSettings(quantized_generators=("blurred",)), _Loaded(0))
    rows = {(r["model"], r["generator"]): r for r in section["rows"]}
    assert set(rows) == {(m, g) for m in ("deepfake-ce", "deepfake-clip", "deepfake-authguard") for g in ("FP", "blurred")}
    for (model, generator), row in rows.items():
        assert 0 <= row["auc"] <= 1 and ("auc_minus_fp" in row) == (generator != "FP")
        if generator != "FP":
            diff = row["auc_minus_fp"]
            assert diff["low"] <= diff["difference"] <= diff["high"]
            assert diff["difference"] == pytest.approx(row["auc"] - rows[(model, "FP")]["auc"])
    assert section["pool_detail"]["blurred"] < section["pool_detail"]["FP"]
