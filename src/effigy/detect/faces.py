"""Photos in, faces found: what every detector command and the service do to an image before a model sees it.

effigy's face models learned from face crops framed as the LFW crops are (the face filling the picture). A
photograph given whole would be squeezed to the model's input with the face a few pixels wide, and scored as
whatever that looks like (three real photos were all called fake that way). So a photo goes through dlib's HOG
frontal-face detector (built into the dlib-bin wheel, no model file, nothing downloaded), on a copy scaled down
to ``DETECT_SIDE``; each face it is sure of (``MIN_SCORE``) is framed like an LFW crop
(:func:`effigy.worlds.faces.lfw_like_square`) and cut from the full-resolution photo in colour. An image no
larger than ``CROP_SIDE`` on its longer side is taken as a face crop already (no detector sees a face that
small, and crops are what the models read); one the caller says is a crop (``--crops``) skips the search. A
photo with no face gets no verdict: "no face found".

Why not scikit-image's LBP cascade, which the face world uses to find its two held-out faces: on photos it
fires on smooth colour fields and parts of clothing, and its boxes cannot be told from faces by how well they
match the mean LFW face; dlib's detector scores its boxes, and the false ones score low.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from effigy.errors import WorldError
from effigy.worlds.faces import SIZE, from_pil, lfw_like_square

log = logging.getLogger(__name__)

CROP_SIDE = 2 * SIZE  # an image at most this long on its longer side is a face crop already
DETECT_SIDE = 800  # the cascade reads the photo scaled to at most this on its longer side (speed; faces stay large)
MIN_SCORE = 0.5  # dlib's detection score below which a box is not taken for a face (false boxes score ~0.1)
MAX_FACES = 8
NO_FACE = "no face found"


@dataclass(frozen=True)
class FaceCrop:
    """One face ready for a model: ``image`` [3, SIZE, SIZE] in [0, 1], and where it was in the photo
    (``box``: left, top, side in the photo's pixels; None when the whole image was the crop)."""

    image: np.ndarray
    box: tuple[int, int, int] | None = None

    def to_dict(self) -> dict:
        return {"box": None if self.box is None else {"left": self.box[0], "top": self.box[1], "side": self.box[2]}}


def find_faces(photo, crops: bool = False, max_faces: int = MAX_FACES) -> list[FaceCrop]:
    """The faces of a decoded photo (an RGB ``PIL.Image``), largest first; empty when there is none.

    Args:
        photo: the decoded image (``effigy.images.decode_image``).
        crops: the image is a face crop already: resize it, do not search.
        max_faces: at most this many faces, the largest.
    Returns:
        One :class:`FaceCrop` per face (the whole image for a crop).
    """
    if crops or max(photo.size) <= CROP_SIDE:
        return [FaceCrop(_model_sized(photo))]
    scale = min(1.0, DETECT_SIDE / max(photo.size))
    small = photo if scale == 1.0 else photo.resize((round(photo.width * scale), round(photo.height * scale)))
    pixels = np.asarray(small.convert("RGB"))
    faces = []
    for box in _detected_boxes(pixels)[:max_faces]:
        try:
            left, top, side = lfw_like_square(pixels, box)
        except WorldError:  # too near the edge for a framed square: the detector's own box
            left, top, side = box["c"], box["r"], min(box["width"], box["height"])
        full = tuple(round(v / scale) for v in (left, top, side))
        crop = photo.crop((full[0], full[1], full[0] + full[2], full[1] + full[2]))
        faces.append(FaceCrop(_model_sized(crop), full))
    log.info("%d face(s) found in a %dx%d image", len(faces), *photo.size)
    return faces


def stack_faces(images: list[np.ndarray]) -> np.ndarray:
    """[F, 3, SIZE, SIZE] of face crops, F = 0 when there are none (a batch a model can take either way)."""
    return np.stack(images) if images else np.zeros((0, 3, SIZE, SIZE), dtype=np.float32)


def _detected_boxes(pixels: np.ndarray) -> list[dict]:
    """dlib's face boxes on ``pixels`` [H, W, 3] uint8 (upsampled once, so faces from about 40 pixels on) that
    score at least ``MIN_SCORE``, largest first, overlapping ones merged into the largest, as
    ``{"r", "c", "width", "height"}``."""
    import dlib

    rects, scores, _ = _detector(dlib).run(np.ascontiguousarray(pixels), 1, 0.0)
    boxes = [{"r": r.top(), "c": r.left(), "width": r.width(), "height": r.height()}
             for r, score in zip(rects, scores) if score >= MIN_SCORE]
    kept: list[dict] = []
    for box in sorted(boxes, key=lambda b: -b["width"] * b["height"]):
        if all(_overlap(box, other) < 0.3 for other in kept):
            kept.append(box)
    return kept


_DETECTOR = []


def _detector(dlib):
    """dlib's frontal face detector, built once per process."""
    if not _DETECTOR:
        _DETECTOR.append(dlib.get_frontal_face_detector())
    return _DETECTOR[0]


def _overlap(a: dict, b: dict) -> float:
    """Intersection over the smaller box's area."""
    width = min(a["c"] + a["width"], b["c"] + b["width"]) - max(a["c"], b["c"])
    height = min(a["r"] + a["height"], b["r"] + b["height"]) - max(a["r"], b["r"])
    if width <= 0 or height <= 0:
        return 0.0
    return width * height / min(a["width"] * a["height"], b["width"] * b["height"])


def _model_sized(pil) -> np.ndarray:
    from PIL import Image

    return from_pil(pil.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR))


def benign_variants(photo) -> dict:
    """A PIL photo whole and after the benign processing a real photo meets on its way (a loose crop, half size,
    JPEG at quality 60, 30% brighter): what a detector must not call fake, and what the real-photo checks and
    the photo-SBI training pairs are made of."""
    import io

    from PIL import Image, ImageEnhance

    w, h = photo.size
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=60)
    return {"whole": photo, "loose crop": photo.crop((w // 10, h // 10, w - w // 10, h - h // 10)),
            "half size": photo.resize((w // 2, h // 2), Image.BILINEAR),
            "JPEG q60": Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"),
            "30% brighter": ImageEnhance.Brightness(photo).enhance(1.3)}


def benign_faces(photos) -> np.ndarray:
    """[N, 3, SIZE, SIZE] float32: the faces found in each PIL photo, whole and after each benign processing
    (:func:`benign_variants`), in that order; the real-photo checks' held-out faces and the photo-SBI pairs'
    sources are made this way."""
    faces = [face.image for photo in photos for image in benign_variants(photo).values() for face in find_faces(image)]
    return np.stack(faces).astype(np.float32)
