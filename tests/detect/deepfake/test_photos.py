"""Real photographs' faces and their self-blended fakes (issue 45's photo-SBI pairs): read from insightface's
wheel by file and sha256, paired real / SBI with the world's own kinds, joining the training captures only when
the config asks, and one clear error without the package."""
import importlib.metadata

import numpy as np
import pytest

from effigy.detect.deepfake import photos
from effigy.errors import ModelError


def test_every_photo_face_comes_with_self_blended_fakes_of_itself():
    from effigy.detect.deepfake.data import kind_ids

    pairs = photos.photo_sbi_pairs(seed=0)
    assert len(pairs.images) == 2 * photos.PAIRS_PER_FACE * len(photos.photo_faces()) > 100
    reals, fakes = pairs.images[~pairs.fake], pairs.images[pairs.fake]
    assert len(reals) == len(fakes) and set(pairs.family) == {"real", "sbi"} and set(pairs.domain) == {"photo"}
    changed = np.abs(fakes - reals).max(axis=(1, 2, 3))  # each fake follows its real: the blend changed it
    assert (changed > 0.01).all() and np.abs(fakes - reals).mean() < 0.1
    assert set(kind_ids(pairs).tolist()) == {0, 1}  # the world's caption kinds ('real', ''), ('sbi', 'face')
    assert (pairs.identity[~pairs.fake] == pairs.identity[pairs.fake]).all()


def test_pairs_of_any_faces_keep_each_face_its_identity_and_the_domain_asked():
    from effigy.detect.deepfake.calibration import lfw_photos

    faces = lfw_photos("dev")[:3]
    pairs = photos.sbi_pairs(faces, np.random.default_rng(0), 2, 500, domain="lfw photo")
    assert pairs.identity.tolist() == [500] * 4 + [501] * 4 + [502] * 4 and set(pairs.domain) == {"lfw photo"}
    reals = pairs.images[~pairs.fake]
    assert all(np.array_equal(r, faces[i // 2]) or np.array_equal(r, faces[i // 2][:, :, ::-1])
               for i, r in enumerate(reals))  # each real is its face, flipped or not


def test_the_pairs_join_training_only_when_asked():
    from effigy.detect.deepfake.data import training_images
    from effigy.detect.deepfake.model import DeepfakeConfig

    plain = training_images(DeepfakeConfig())
    with_photos = training_images(DeepfakeConfig(photo_sbi=True))
    assert "photo" not in set(plain.domain) and len(with_photos.images) == len(plain.images) + len(
        photos.photo_sbi_pairs(0).images)


def test_without_the_package_the_error_says_what_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(ModelError, match="pip install 'insightface==2.1'"):
        photos.photo_files()
