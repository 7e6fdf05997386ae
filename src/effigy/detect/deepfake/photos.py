"""Real photographs' faces and their self-blended fakes, for training a deepfake detector that does not call a
crisp colour photo fake (issue 45; the evidence: docs/notes/deepfake.md, checks/real_photo_probe_photo_sbi.md).

The face world's reals are colourised 25-pixel LFW crops through blurring, noisy cameras; a photograph's face is
unlike all of them, and the encoders call it fake. SBI (Shiohara and Yamasaki 2022,
https://arxiv.org/abs/2204.08376) makes fakes from reals alone, so a photo's faces can join training on both
sides: the crispness is in the real and in its fake, and only the blend separates them.

The photographs ship in a registry wheel, ``insightface==2.1`` (``insightface/data/images/t1.jpg``, a group
photograph, and ``Tom_Hanks_54745.png``), read by file (located through the package's installed file list,
never by importing it) and checked by sha256. astronaut and grace_hopper, the held-out photographs of the
real-photo checks, are never among them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from effigy.errors import ModelError
from effigy.worlds.deepfakes import ARTIFACTS, ForgeryImages, self_blend, visible_cues

PACKAGE = "insightface==2.1"
PHOTOS = {"t1.jpg": "47f682e945b659f93a9e490b9c9c4a2a864abe64dace9e1a2893845ddfd69489",
          "Tom_Hanks_54745.png": "8545da294e8c7c79911169c3915fed8528f1960cd0ed99b92453788ca4275083"}
PAIRS_PER_FACE = 6
IDENTITY_BASE = 3000  # keys of their own, apart from the world's identities and the held-out faces'


def photo_files() -> list[Path]:
    """The photographs' files, sha256-checked.

    Raises:
        ModelError: the package is not installed, or a file is missing or altered.
    """
    import importlib.metadata

    try:
        files = {f.name: Path(f.locate()) for f in importlib.metadata.files("insightface") or []
                 if str(f).startswith("insightface/data/images/")}
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(f"the photo-SBI training pairs read real photographs from {PACKAGE}: pip install "
                         f"'{PACKAGE}'.") from None
    found = []
    for name, sha256 in PHOTOS.items():
        path = files.get(name)
        if path is None or not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != sha256:
            raise ModelError(f"{PACKAGE}'s {name} is missing or not the expected file; reinstall '{PACKAGE}'.")
        found.append(path)
    return found


def photo_faces() -> np.ndarray:
    """[N, 3, SIZE, SIZE] the faces found in the photographs, whole and after benign processing."""
    from PIL import Image

    from effigy.detect.faces import benign_faces

    return benign_faces(Image.open(path).convert("RGB") for path in photo_files())


def photo_sbi_pairs(seed: int = 0, pairs_per_face: int = PAIRS_PER_FACE) -> ForgeryImages:
    """Each photo face, flipped or not, ``pairs_per_face`` times, each with a self-blended fake of it, as
    forgery-world rows (family 'real' / 'sbi', region '' / 'face', domain 'photo'), so the captions, kinds and
    batches of training take them like the world's own."""
    return sbi_pairs(photo_faces(), np.random.default_rng([seed, 45]), pairs_per_face, IDENTITY_BASE)


def sbi_pairs(faces: np.ndarray, rng: np.random.Generator, pairs_per_face: int, identity_base: int,
              domain: str = "photo") -> ForgeryImages:
    """Real / SBI-fake pairs of face crops [N, 3, SIZE, SIZE]: each face, flipped or not, ``pairs_per_face``
    times with a self-blended fake of it (face ``i`` is identity ``identity_base + i``), as forgery-world rows."""
    from effigy.worlds.faces import draw_pose

    images, fake, identity, cues = [], [], [], []
    for index, face in enumerate(faces):
        for _ in range(pairs_per_face):
            real = np.ascontiguousarray(face[:, :, ::-1]) if rng.random() < 0.5 else face
            forgery = self_blend(real, draw_pose(rng), rng)
            images += [real, forgery.image]
            fake += [False, True]
            identity += [identity_base + index] * 2
            cues += ["", visible_cues(real, forgery)]
    fake = np.array(fake)
    column = lambda real_value, fake_value: np.array([fake_value if f else real_value for f in fake],  # noqa: E731
                                                     dtype=object)
    return ForgeryImages(np.stack(images).astype(np.float32), fake, column("real", "sbi"), column("", "face"),
                         column("", ARTIFACTS["sbi"]), column(domain, domain), np.array(identity, dtype=np.int64),
                         np.full(len(fake), -1, dtype=np.int64), np.array(cues, dtype=object))
