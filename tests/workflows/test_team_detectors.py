"""A team's own detector: `effigy detect deepfake|fas train --data` fine-tunes a shipped model on folders the
test writes (real/fake, DeepfakeBench JSON, live/spoof per domain), stores the threshold chosen on the val
split's bona fide faces, and `eval --model OUT` reads it back; `fas adapt --data` adapts to a team's folders."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effigy.worlds.deepfakes import render_forgery
from effigy.worlds.faces import real_faces, render_capture, split_identities
from tests.test_cli import run_cli


def _png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def deepfake_folders(tmp_path_factory) -> Path:
    """train / val / test, each with real/ and fake/sbi/, fake/swap/ (held-out identities of the world)."""
    root = tmp_path_factory.mktemp("team") / "faces"
    identities = [int(i) for i in split_identities("test")]
    for split, offset in (("train", 0), ("val", 8), ("test", 16)):
        for i in range(6):
            identity = identities[(offset + i) % len(identities)]
            for family, folder in (("real", "real"), ("sbi", "fake/sbi"), ("swap", "fake/swap")):
                image, _ = render_forgery(identity, real_faces()[identity], family, "phone", i, 0, identities)
                _png(root / split / folder / f"{family}{i}.png", image)
    return root


def test_deepfake_train_then_eval_uses_the_threshold_chosen_on_val_reals(deepfake_folders, tmp_path, monkeypatch,
                                                                        capsys):
    from effigy.detect.datasets import face_crops
    from effigy.detect.deepfake.datasets import read_dataset
    from effigy.detect.deepfake.model import fake_scores
    from effigy.workflows.detectors import DEEPFAKE_TASK, load_detector

    out = tmp_path / "ours"
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "deepfake", "train", "--data", str(deepfake_folders),
                                 "--steps", "12", "--out", str(out), "--crops", "--json")
    assert code == 0, err
    summary = json.loads(printed)
    record = json.loads((out / "MANIFEST.json").read_text())["deepfake-authguard"]
    assert record["train_command"].startswith("effigy detect deepfake train --data") and record["steps"] == 12
    assert summary["trained_frames"] == 18 and summary["trained_attacks"] == 12
    detector = load_detector(str(out), DEEPFAKE_TASK)
    threshold = detector.threshold
    val_reals = [f for f in read_dataset(deepfake_folders, "val") if not f.fake]
    scores = fake_scores(detector.model, face_crops(val_reals, True)[0])
    assert (scores >= threshold).mean() <= 0.05 and scores.max() < threshold <= scores.max() + 1e-6
    assert (scores < np.float32(threshold)).all()  # also where the comparison is made in float32
    shipped = load_detector("deepfake-authguard", DEEPFAKE_TASK).model.state_dict()
    assert any(not np.allclose(v.float().numpy(), shipped[k].float().numpy(), atol=1e-3)
               for k, v in detector.model.state_dict().items() if v.is_floating_point())
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "deepfake", "eval", "--data", str(deepfake_folders),
                                 "--model", str(out), "--crops", "--json")
    assert code == 0, err
    report = json.loads(printed)
    assert report["threshold"] == threshold and report["all"]["frames"] == 18
    assert set(report["methods"]) == {"sbi", "swap"}


def test_deepfake_fine_tuning_learns_the_teams_labels():
    """Labels the shipped detector gets backwards (world reals marked fake and fakes marked real) are learnt."""
    from effigy.detect.deepfake.model import fake_scores, fine_tune
    from effigy.models.zoo import load_zoo_model

    identities = [int(i) for i in split_identities("test")]
    images, fake = [], []
    for i, identity in enumerate(identities[:8]):
        for family in ("real", "sbi"):
            image, _ = render_forgery(identity, real_faces()[identity], family, "phone", i, 0, identities)
            images.append(image)
            fake.append(family == "real")  # backwards on purpose
    images, fake = np.stack(images).astype(np.float32), np.array(fake)
    model, _ = load_zoo_model("deepfake-authguard")
    before = fake_scores(model, images)
    after = fake_scores(fine_tune(model, images, fake, steps=30, seed=0, learning_rate=5e-4), images)
    gap = lambda s: s[fake].mean() - s[~fake].mean()  # noqa: E731
    assert gap(before) < 0 < gap(after)


@pytest.fixture(scope="module")
def fas_domains(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fasteam") / "cameras"
    identities = [int(i) for i in split_identities("test")]
    for domain in ("phone", "webcam"):
        for split, offset in (("train", 0), ("val", 4), ("test", 8)):
            for kind, folder in (("live", "live"), ("print", "spoof/print"), ("replay", "spoof/replay")):
                for i in range(3):
                    identity = identities[offset + i]
                    _png(root / domain / split / folder / f"{identity}.png",
                         render_capture(real_faces()[identity], identity, kind, domain, 0))
    return root


def test_fas_train_eval_and_adapt_on_a_teams_domain_folders(fas_domains, tmp_path, monkeypatch, capsys):
    out = tmp_path / "fas"
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "fas", "train", "--data", str(fas_domains), "--steps",
                                 "10", "--out", str(out), "--crops", "--json")
    assert code == 0, err
    point = json.loads(printed)["operating_point"]
    assert point["bonafide_faces"] == 6 and point["target_bpcer"] == 0.05
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "fas", "eval", "--data", str(fas_domains), "--model",
                                 str(out), "--crops", "--json")
    assert code == 0, err
    report = json.loads(printed)
    assert report["threshold"] == point["threshold"]
    assert {r["domain"] for r in report["rows"]} == {"phone", "webcam", "all"}
    one_out = tmp_path / "without_webcam"  # a leave-one-domain-out protocol, as lists of domain folders
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "fas", "train", "--data", str(fas_domains), "--domains",
                                 "phone", "--steps", "4", "--out", str(one_out), "--crops", "--json")
    assert code == 0, err
    assert json.loads(printed)["trained_frames"] == 9 and json.loads(printed)["domains"] == ["phone"]
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "fas", "eval", "--data", str(fas_domains), "--domains",
                                 "webcam", "--model", str(one_out), "--crops", "--json")
    assert code == 0, err
    assert [r["domain"] for r in json.loads(printed)["rows"]] == ["webcam"]
    head = tmp_path / "head.safetensors"
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "fas", "adapt", "--data", str(fas_domains / "webcam"),
                                 "--model", "fas-protonet-without-webcam", "--adaptor", "ot-shift", "--crops",
                                 "--out", str(head), "--json")
    assert code == 0, err
    rows = {r["crops"]: r for r in json.loads(printed)["rows"]}
    assert rows["live"]["count"] == 3 and rows["attack"]["count"] == 6 and head.is_file()
    code, _, err = run_cli(monkeypatch, capsys, "detect", "fas", "train", "--data", str(fas_domains), "--steps", "2",
                           "--model", "fas-protonet-without-phone", "--out", str(out), "--crops")
    assert code == 2 and "already holds fas-protonet" in err  # one folder, one trained detector


def test_a_deepfakebench_index_without_val_keeps_the_base_threshold(tmp_path, monkeypatch, capsys):
    from tests.detect.deepfake.test_datasets import _save

    index: dict = {"Toy": {}}
    for label, family in (("Celeb-real", "real"), ("Celeb-synthesis", "swap")):
        videos = {}
        for v in range(2):
            paths = [f"frames/{label}/{v}/{f}.png" for f in range(2)]
            for f, rel in enumerate(paths):
                _save(tmp_path / rel, family, v, seed=f)
            videos[str(v)] = {"label": label, "frames": paths}
        index["Toy"][label] = {"train": videos, "test": videos}
    (tmp_path / "Toy.json").write_text(json.dumps(index))
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "deepfake", "train", "--data",
                                 str(tmp_path / "Toy.json"), "--model", "deepfake-ce", "--steps", "2", "--out",
                                 str(tmp_path / "out"), "--crops", "--json")
    assert code == 0, err
    from effigy.models.zoo import read_manifest

    base = read_manifest()["deepfake-ce"]["operating_point"]  # the shipped model's recorded point, kept
    assert json.loads(printed)["operating_point"] == base
    code, printed, err = run_cli(monkeypatch, capsys, "detect", "deepfake", "eval", "--data",
                                 str(tmp_path / "Toy.json"), "--model", str(tmp_path / "out"), "--crops", "--json")
    assert code == 0, err
    assert json.loads(printed)["threshold"] == base["threshold"]
