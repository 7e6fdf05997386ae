import json

import pytest

import effigy.bench.fas as bench
from effigy.bench.fas import FASBenchSettings, average_over_domains, run_fas_bench
from effigy.bench.fas_report import write_fas_report
from tests.detect import tiny_fas


@pytest.fixture(scope="module")
def tiny():
    model = tiny_fas(("phone", "webcam", "laptop", "kiosk"))
    return model, model.config


def test_the_bench_writes_every_adaptor_per_domain_and_the_held_out_faces(tiny, monkeypatch, tmp_path):
    monkeypatch.setattr(bench, "load_zoo_model", lambda name: tiny)
    result = run_fas_bench(FASBenchSettings(shots=(3,), draws=1, tent=True))
    domains = {r["domain"] for r in result["rows"]}
    assert domains == {"phone", "webcam", "laptop", "kiosk"}
    adaptors = {r["adaptor"] for r in result["averages"]}
    assert {"no adaptation", "T3A", "linear mixup", "OT geodesic mixup", "OT prototype shift (training-free)",
            "TENT (updates the model's norms)"} <= adaptors
    assert all(r["domains"] == 4 for r in result["averages"])
    assert {r["domain"] for r in result["attack_rows"]} == {"print", "replay", "mask"}
    assert all(r["domains"] == 3 for r in result["attack_averages"])
    assert {(r["face"], r["kind"]) for r in result["held_out"]} == {
        (f, k) for f in ("astronaut", "grace_hopper") for k in ("live", "print", "replay", "mask")}
    paths = write_fas_report(result, tmp_path, "effigy bench fas")
    assert json.loads(paths["json"].read_text())["benchmark"] == "fas"
    markdown = paths["markdown"].read_text()
    assert "Held-out real faces" in markdown and "Leave-one-attack-out" in markdown and paths["picture"].stat().st_size > 0


def test_averages_and_changes_are_computed_per_adaptor():
    rows = [{"domain": d, "adaptor": a, "shots": s, "touches_model": False, "hter": h, "apcer": 0.0, "bpcer": 0.0,
             "auc": 0.5, "tpr_at_fpr_1": 0.0} for d, a, s, h in (("x", "no adaptation", 0, 0.4), ("y", "no adaptation", 0, 0.2),
                                                              ("x", "ot", 5, 0.2), ("y", "ot", 5, 0.1))]
    averages = {r["adaptor"]: r for r in average_over_domains(rows)}
    assert averages["no adaptation"]["hter"] == pytest.approx(0.3)
    assert averages["ot"]["hter"] == pytest.approx(0.15) and averages["ot"]["hter_change"] == pytest.approx(-0.5)
