"""A team's own deepfake data: DeepfakeBench's dataset JSON and real/ + fake/<method>/ folders, written here
small, read, scored and reported with DeepfakeBench's metrics; broken layouts get one line naming the rule."""
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effigy.detect.deepfake.datasets import dataset_report, read_dataset
from effigy.errors import DatasetError
from effigy.worlds.deepfakes import render_forgery
from effigy.worlds.faces import real_faces, split_identities


def _save(path: Path, family: str, identity_index: int, seed: int = 0) -> Path:
    identities = [int(i) for i in split_identities("test")]
    identity = identities[identity_index % len(identities)]
    image, _ = render_forgery(identity, real_faces()[identity], family, "phone", seed, 0, identities)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((image.transpose(1, 2, 0) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> Path:
    """test/real: 3 images and a video of 2 frames; test/fake/sbi: 3 images; test/fake/swap: a video of 2 frames."""
    root = tmp_path_factory.mktemp("team") / "faces"
    for i in range(3):
        _save(root / "test" / "real" / f"r{i}.png", "real", i)
        _save(root / "test" / "fake" / "sbi" / f"s{i}.png", "sbi", i)
    for j in range(2):
        _save(root / "test" / "real" / "clip1" / f"{j:03d}.png", "real", 5, seed=j)
        _save(root / "test" / "fake" / "swap" / "clip7" / f"{j:03d}.png", "swap", 6, seed=j)
    return root


@pytest.fixture(scope="module")
def deepfakebench(tmp_path_factory) -> Path:
    """datasets/Toy/... frames and dataset_json/Toy.json with FaceForensics++-style compression levels."""
    base = tmp_path_factory.mktemp("dfb")
    index: dict = {"Toy": {}}
    for label, family in (("FF-real", "real"), ("FF-DF", "swap"), ("FF-F2F", "sbi")):
        splits = {}
        for split in ("train", "test"):
            videos = {}
            for v in range(2):
                paths = [f"datasets/Toy/{label}/{split}/{v:03d}/{f}.png" for f in range(2)]
                for f, rel in enumerate(paths):
                    _save(base / rel, family, v + (0 if split == "test" else 10), seed=f)
                videos[f"{v:03d}"] = {"label": label, "frames": paths}
            splits[split] = {"c23": videos}
        index["Toy"][label] = splits
    (base / "dataset_json").mkdir()
    (base / "dataset_json" / "Toy.json").write_text(json.dumps(index))
    return base / "dataset_json" / "Toy.json"


def test_folders_give_each_frame_its_class_method_and_video(folders):
    frames = read_dataset(folders, "test")
    assert len(frames) == 3 + 2 + 3 + 2
    assert {f.method for f in frames} == {"real", "sbi", "swap"} and all(f.fake == (f.method != "real") for f in frames)
    assert len({f.video for f in frames if f.method == "swap"}) == 1  # a folder of frames is one video
    assert len({f.video for f in frames if f.method == "sbi"}) == 3  # an image is its own video


def test_deepfakebench_json_reads_labels_splits_and_compression(deepfakebench):
    frames = read_dataset(deepfakebench, "test")
    assert len(frames) == 3 * 2 * 2 and all(f.path.exists() for f in frames)  # relative paths found above the JSON
    assert {f.method for f in frames} == {"real", "FF-DF", "FF-F2F"} and {f.dataset for f in frames} == {"Toy"}
    with pytest.raises(DatasetError, match="compression levels c23, not 'c40'"):
        read_dataset(deepfakebench, "test", compression="c40")
    with pytest.raises(DatasetError, match="no 'val' split"):
        read_dataset(deepfakebench, "val")


def test_broken_layouts_get_one_line_naming_the_rule(folders, tmp_path):
    with pytest.raises(DatasetError, match="no val/"):
        read_dataset(folders, "val")
    (tmp_path / "real").mkdir()
    (tmp_path / "fake" / "sbi").mkdir(parents=True)
    _save(tmp_path / "real" / "r.png", "real", 0)
    with pytest.raises(DatasetError, match="holds no images"):
        read_dataset(tmp_path, "test")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not a readable JSON"):
        read_dataset(tmp_path / "broken.json", "test")


def test_the_report_has_deepfakebench_metrics_overall_per_method_and_video_level(folders):
    frames = read_dataset(folders, "test")
    scores = np.array([0.9 if f.fake else 0.1 for f in frames])
    scores[0] = np.nan  # a frame where no face was found
    report = dataset_report(frames, scores, 0.5)
    assert report["no_face_found"] == 1 and report["all"]["frames"] == len(frames) - 1
    assert report["all"]["frame_auc"] == 1.0 and report["all"]["acc"] == 1.0 and report["all"]["eer"] == 0.0
    assert set(report["methods"]) == {"sbi", "swap"} and report["methods"]["swap"]["videos"] == 1 + 4
