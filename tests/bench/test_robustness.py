"""The robustness report in the standards' words: each attack named as a 30107-3 PAI species or an 18099
injection species, and per detector the BPCER at its threshold with the worst species' APCER of each kind."""
from effigy.bench.robustness import side_by_side, standard_summary


def _rows(detector, rates):
    return [{"detector": detector, "attack": attack, "attempts": 10,
             "metric": "BPCER" if attack == "live" else "APCER", "rate": rate} for attack, rate in rates.items()]


def test_the_summary_takes_each_detectors_worst_presentation_and_injection_species():
    rows = (_rows("passive", {"live": 0.1, "print": 0.2, "mask": 0.05, "face swap": 0.9, "pgd": 1.0})
            + _rows("verifier", {"live": 0.0, "print": 0.0, "mask": 1.0, "face swap": 0.0, "pgd": 0.02}))
    summary = {r["detector"]: r for r in standard_summary(rows)}
    assert summary["passive"] == {"detector": "passive", "bpcer": 0.1, "apcer_pai": 0.2, "worst_pai": "print",
                                  "apcer_iai": 1.0, "worst_iai": "pgd"}
    assert summary["verifier"]["worst_pai"] == "mask" and summary["verifier"]["apcer_iai"] == 0.02
    table = {r["attack"]: r for r in side_by_side(rows)}
    assert "30107-3" in table["print"]["standard"] and "18099" in table["face swap"]["standard"]
    assert table["live"]["standard"] == "bona fide presentation" and table["pgd"]["verifier"] == 0.02
