"""Face anti-spoofing on a team's folders: live/ + spoof/<species>/ under capture-domain folders, read, scored at
the model's source threshold and reported per domain with APCER per attack species."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effigy.detect.datasets import ANTI_SPOOFING, read_domains
from effigy.errors import DatasetError
from effigy.worlds.faces import real_faces, render_capture, split_identities


def write_domains(root: Path, domains=("phone", "webcam"), per_kind: int = 2) -> Path:
    identities = [int(i) for i in split_identities("test")]
    for domain in domains:
        for kind, folder in (("live", "live"), ("print", "spoof/print"), ("replay", "spoof/replay")):
            for i in range(per_kind):
                identity = identities[i]
                image = render_capture(real_faces()[identity], identity, kind, domain, 0)
                path = root / domain / "test" / folder / f"{identity}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
    return root


def test_domain_folders_give_each_frame_its_domain_and_species(tmp_path):
    frames = read_domains(write_domains(tmp_path), "test", ANTI_SPOOFING)
    assert len(frames) == 2 * 3 * 2 and {f.dataset for f in frames} == {"phone", "webcam"}
    assert {f.method for f in frames if f.fake} == {"print", "replay"} and {f.method for f in frames if not f.fake} == {"live"}
    with pytest.raises(DatasetError, match="no val/"):
        read_domains(tmp_path, "val", ANTI_SPOOFING)


def test_fas_eval_on_folders_reports_apcer_per_species_and_domain(tmp_path, monkeypatch, capsys):
    from tests.test_cli import run_cli

    write_domains(tmp_path / "team")
    code, out, _ = run_cli(monkeypatch, capsys, "detect", "fas", "eval", "--data", str(tmp_path / "team"), "--json")
    assert code == 0
    report = json.loads(out)
    rows = {r["domain"]: r for r in report["rows"]}
    assert set(rows) == {"phone", "webcam", "all"} and report["no_face_found"] == 0
    for row in rows.values():
        assert {"apcer_print", "apcer_replay", "bpcer", "acer", "auc"} <= row.keys()
        assert row["apcer_worst"] == max(row["apcer_print"], row["apcer_replay"])
    assert rows["all"]["frames"] == 12
