"""A face world for anti-spoofing and deepfake detection, built offline from real face crops.

Real faces: the 100 face crops of scikit-image's ``lfw_subset()`` (25x25 grey, Labeled Faces in the Wild),
pinned by sha256. The subset carries no identity labels, so each crop is its own identity; the splits are
disjoint by crop (no two crops are near-copies: their largest pixel correlation is below 0.9, checked in the
tests). scikit-image's ``astronaut`` and matplotlib's ``grace_hopper`` are held out of every split: they are
found with scikit-image's LBP frontal-face cascade (it loads offline), framed like the LFW crops by matching
the mean LFW face, and only ever used for checks.

A *live* capture puts the face in front of a simulated camera: colourised with the identity's skin tone,
posed (small rotation, scale, shift), lit from one side, with a small specular highlight. A *spoof* capture
puts a presentation attack in front of the same camera instead:

- print: halftone dot screen, gamut compression (a print cannot reach the display's black or saturation),
  paper texture, and the sheet's curvature (bent geometry and shading);
- replay: a screen's moire, its gamma and extra brightness, refresh banding, a bezel edge and a glare spot;
- mask: smoothed skin texture, no specular highlight, and the mask's rigid edge and material tint.

Every capture then goes through a *domain*: a camera's resolution, blur, white balance, sensor noise and JPEG
quality. The four domains play the roles of OULU-NPU, CASIA-FASD, Replay-Attack and MSU-MFSD in the usual
leave-one-domain-out protocol; leaving one attack out of training gives the leave-one-attack-out protocol.
Every image is drawn from its own seed (split, identity, domain, kind, index), so a render is the same in
any order and on any machine.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from effigy.errors import WorldError

SIZE = 64  # pixels of every rendered image (square, RGB)
LFW_SUBSET_SHA256 = "9560ec2f5edfac01973f63a8a99d00053fecd11e21877e18038fbe500f8e872c"  # scikit-image 0.26.0
HELD_OUT_SHA256 = {
    "astronaut": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",  # scikit-image 0.26.0
    "grace_hopper": "a8ca6d734765703b09728ab47fe59f473d93ae3967fc24c7c0288c3c7adb7130",  # matplotlib 3.11.2
}
ATTACKS = ("print", "replay", "mask")
KINDS = ("live", *ATTACKS)
SPLITS = {"train": 60, "dev": 15, "test": 25}  # crops per split, by identity
SKIN_TONES = np.array([[1.00, 0.80, 0.66], [0.96, 0.72, 0.56], [0.86, 0.62, 0.45], [0.70, 0.48, 0.33],
                       [0.52, 0.35, 0.24], [0.98, 0.78, 0.70]], dtype=np.float32)


@dataclass(frozen=True)
class CaptureDomain:
    """One camera: what every capture made with it goes through, in this order.

    Args:
        name: the domain's name.
        resolution: the sensor's pixels across the face before the image is brought back to ``SIZE``.
        blur: Gaussian blur sigma in sensor pixels (focus, motion).
        white_balance: RGB gains.
        noise: sensor noise standard deviation (images in [0, 1]).
        jpeg: JPEG quality of the stored frame.
    """

    name: str
    resolution: int
    blur: float
    white_balance: tuple[float, float, float]
    noise: float
    jpeg: int


DOMAINS = {d.name: d for d in (
    CaptureDomain("phone", 64, 0.4, (1.05, 1.00, 0.93), 0.010, 92),
    CaptureDomain("webcam", 36, 0.7, (0.92, 1.00, 1.12), 0.035, 55),
    CaptureDomain("laptop", 44, 1.1, (1.12, 1.00, 0.84), 0.020, 75),
    CaptureDomain("kiosk", 52, 0.3, (1.00, 1.06, 0.97), 0.050, 40),
)}


@dataclass
class FaceImages:
    """Rendered captures, one row each: images [N, 3, SIZE, SIZE] float32 in [0, 1]; ``live`` True for a live
    face; ``kind`` 'live' or the attack; ``domain``; ``identity`` the crop's index in ``lfw_subset``."""

    images: np.ndarray
    live: np.ndarray
    kind: np.ndarray
    domain: np.ndarray
    identity: np.ndarray

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: np.ndarray) -> FaceImages:
        """The rows picked by an index or boolean array."""
        return FaceImages(self.images[rows], self.live[rows], self.kind[rows], self.domain[rows], self.identity[rows])

    @staticmethod
    def concat(parts: Sequence[FaceImages]) -> FaceImages:
        return FaceImages(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                            ("images", "live", "kind", "domain", "identity")))


def _checked_bytes(path: Path, sha256: str, what: str) -> bytes:
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise WorldError(f"{path} is not the {what} effigy pinned (sha256 differs); install the pinned "
                         "scikit-image / matplotlib versions from pyproject.toml.")
    return data


@lru_cache(maxsize=1)
def real_faces() -> np.ndarray:
    """[100, 25, 25] float32 in [0, 1]: the face crops of scikit-image's ``lfw_subset`` (its other 100 images
    are not faces), checked against the pinned sha256."""
    import skimage.data

    path = Path(skimage.data.__file__).parent / "lfw_subset.npy"
    array = np.load(io.BytesIO(_checked_bytes(path, LFW_SUBSET_SHA256, "lfw_subset")), allow_pickle=False)
    return array[:100].astype(np.float32)


def split_identities(split: str) -> np.ndarray:
    """The crop indices of a split (train / dev / test): a fixed, seeded partition of the 100 identities."""
    if split not in SPLITS:
        raise WorldError(f"unknown face split {split!r}; use one of {', '.join(SPLITS)}.")
    order = np.random.default_rng(2025).permutation(sum(SPLITS.values()))
    start = 0
    for name, count in SPLITS.items():
        if name == split:
            return np.sort(order[start: start + count])
        start += count
    raise AssertionError("unreachable")


def held_out_face(name: str) -> np.ndarray:
    """[25, 25] grey crop of a held-out real face (``astronaut`` or ``grace_hopper``), found by scikit-image's
    LBP frontal-face cascade and cut like an ``lfw_subset`` crop. Only for checks: never train on it."""
    from skimage import data
    from skimage.feature import Cascade

    from effigy.images import decode_image

    if name not in HELD_OUT_SHA256:
        raise WorldError(f"unknown held-out face {name!r}; use one of {', '.join(HELD_OUT_SHA256)}.")
    if name == "astronaut":
        path = Path(data.__file__).parent / "astronaut.png"
    else:
        from matplotlib import cbook
        path = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    image = np.asarray(decode_image(_checked_bytes(path, HELD_OUT_SHA256[name], name), name))
    boxes = Cascade(data.lbp_frontal_face_cascade_filename()).detect_multi_scale(
        img=image, scale_factor=1.2, step_ratio=1, min_size=(60, 60), max_size=(400, 400))
    if not boxes:
        raise WorldError(f"no face found in {name}; the cascade or the image changed.")
    box = max(boxes, key=lambda b: b["width"] * b["height"])
    return _lfw_like_crop(image, box)


def _lfw_like_crop(image: np.ndarray, box: dict) -> np.ndarray:
    """The held-out face framed as the LFW crops are: grey, 25x25, in [0, 1] (see :func:`lfw_like_square`)."""
    from PIL import Image

    left, top, size = lfw_like_square(image, box)
    grey = Image.fromarray(image).convert("L")
    return np.asarray(grey.resize((25, 25), Image.BILINEAR, box=(left, top, left + size, top + size)),
                      dtype=np.float32) / 255.0


def lfw_like_square(image: np.ndarray, box: dict) -> tuple[float, float, float]:
    """(left, top, side) of the square around a face detector's ``box`` (``r``, ``c``, ``width``, ``height``)
    in ``image`` [H, W, 3] that best matches the mean ``lfw_subset`` face (a search over its scale and offset, by
    correlation of the grey 25x25 crop): a face framed as the LFW crops every face model here learned from.

    Raises:
        WorldError: the face is too near the image's edge for any such square.
    """
    from PIL import Image

    grey = Image.fromarray(image).convert("L")
    template = real_faces().mean(axis=0)
    template = (template - template.mean()) / template.std()
    best, best_score = None, -np.inf
    for scale in np.linspace(0.9, 1.2, 7):
        for dy in np.linspace(-0.05, 0.15, 5):
            for dx in np.linspace(-0.1, 0.1, 5):
                size = box["width"] * scale
                top = box["r"] + box["height"] * (0.5 + dy) - size / 2
                left = box["c"] + box["width"] * (0.5 + dx) - size / 2
                if top < 0 or left < 0 or top + size > image.shape[0] or left + size > image.shape[1]:
                    continue
                crop = np.asarray(grey.resize((25, 25), Image.BILINEAR, box=(left, top, left + size, top + size)),
                                  dtype=np.float32) / 255.0
                score = float((((crop - crop.mean()) / (crop.std() + 1e-6)) * template).mean())
                if score > best_score:
                    best, best_score = (float(left), float(top), float(size)), score
    if best is None:
        raise WorldError("the face found is too near the image's edge to be cut like an LFW crop.")
    return best


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _smooth_noise(rng: np.random.Generator, sigma: float, shape: tuple[int, int] = (SIZE, SIZE)) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma)
    return (field / (field.std() + 1e-8)).astype(np.float32)


def _grid() -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    return ys / (SIZE - 1) * 2 - 1, xs / (SIZE - 1) * 2 - 1


def live_face(face: np.ndarray, identity: int, rng: np.random.Generator) -> np.ndarray:
    """[3, SIZE, SIZE] the face as a live person in front of the camera: skin tone, pose, side light and a
    specular highlight (a real face is shiny and 3D; a print or a mask is not)."""
    return posed_live_face(face, identity, rng)[0]


Pose = tuple[np.ndarray, np.ndarray]  # (matrix, offset) of scipy's affine_transform: output pixel -> crop pixel


def posed_live_face(face: np.ndarray, identity: int, rng: np.random.Generator,
                    pose: Pose | None = None) -> tuple[np.ndarray, Pose]:
    """:func:`live_face` and the pose it drew (or was given: a face swap puts the donor in the target's pose),
    so that regions of the aligned crop (eyes, mouth) can be put where the posed face has them
    (:func:`pose_plane`)."""
    from PIL import Image

    grey = np.asarray(Image.fromarray((face * 255).astype(np.uint8)).resize((SIZE, SIZE), Image.BICUBIC),
                      dtype=np.float32) / 255.0
    pose = draw_pose(rng) if pose is None else pose
    grey = pose_plane(grey, pose)
    ys, xs = _grid()
    side = rng.uniform(-1, 1)
    light = 1 + 0.18 * side * xs + 0.06 * rng.uniform(-1, 1) * ys
    cy, cx = rng.uniform(-0.45, -0.2), rng.uniform(-0.15, 0.15)
    specular = 0.22 * np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / 0.02)
    tone = SKIN_TONES[identity % len(SKIN_TONES)] * rng.uniform(0.95, 1.05, 3).astype(np.float32)
    rgb = grey[None] * light[None] * tone[:, None, None] + specular[None]
    return np.clip(rgb, 0, 1).astype(np.float32), pose


def draw_pose(rng: np.random.Generator) -> Pose:
    """A small random pose (rotation within 8 degrees, scale within 6%, shift within 2 pixels) of the aligned
    frame: what every rendered face and its region masks are moved by."""
    angle = np.deg2rad(rng.uniform(-8, 8))
    scale = rng.uniform(0.94, 1.06)
    shift = rng.uniform(-2, 2, 2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) / scale
    centre = np.array([SIZE / 2 - 0.5] * 2)
    return rotation, centre - rotation @ (centre + shift)


def pose_plane(plane: np.ndarray, pose: Pose) -> np.ndarray:
    """A [SIZE, SIZE] plane of the aligned frame (the face, or a region mask) moved by ``pose``."""
    rotation, offset = pose
    return ndimage.affine_transform(plane, rotation, offset, order=1, mode="nearest").astype(np.float32)


def print_attack(live: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A printed photo of the face: halftone, compressed gamut, paper texture, a curved sheet."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    period, angle = rng.uniform(2.6, 3.6), rng.uniform(0, np.pi / 2)
    u, v = np.cos(angle) * xs + np.sin(angle) * ys, -np.sin(angle) * xs + np.cos(angle) * ys
    screen = 0.5 + 0.25 * (np.sin(2 * np.pi * u / period) + np.sin(2 * np.pi * v / period))
    halftone = (live > screen[None]).astype(np.float32)
    image = 0.72 * live + 0.28 * halftone
    grey = image.mean(axis=0, keepdims=True)
    image = grey + 0.65 * (image - grey)  # saturation the inks cannot reach
    image = 0.12 + 0.72 * image  # paper white and ink black
    image = image * (1 + 0.05 * _smooth_noise(rng, 0.7))[None]
    return np.clip(_bend(image, rng), 0, 1).astype(np.float32)


def _bend(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The sheet bent round a vertical cylinder: seen from the front, the paper under screen column x comes
    from arc position arcsin(x sin t) / t (squeezed towards the edges), shaded by the surface's slope."""
    ys, xs = _grid()
    theta = rng.uniform(0.5, 1.0)
    paper_x = np.arcsin(xs * np.sin(theta)) / theta
    rows, cols = (ys + 1) / 2 * (SIZE - 1), (paper_x + 1) / 2 * (SIZE - 1)
    warped = np.stack([ndimage.map_coordinates(c, [rows, cols], order=1, mode="nearest") for c in image])
    shading = 0.75 + 0.25 * np.sqrt(1 - (xs * np.sin(theta)) ** 2)
    return warped * shading[None]


def replay_attack(live: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The face shown on a screen: moire, the screen's gamma and glow, refresh banding, bezel and glare."""
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    fx, fy = rng.uniform(0.28, 0.45), rng.uniform(-0.12, 0.12)
    moire = 0.07 * np.sin(2 * np.pi * (fx * xs + fy * ys) + rng.uniform(0, 2 * np.pi))
    image = live ** rng.uniform(0.7, 0.85) * rng.uniform(1.03, 1.12) + moire[None]
    period, phase = rng.uniform(10, 20), rng.uniform(0, 2 * np.pi)
    image = image * (1 - 0.08 * (np.sin(2 * np.pi * ys / period + phase) > 0.6))[None]
    image = _bezel(image, rng)
    gy, gx = rng.uniform(0, SIZE, 2)
    glare = 0.35 * np.exp(-((ys - gy) ** 2 + (xs - gx) ** 2) / (2 * rng.uniform(4, 8) ** 2))
    return np.clip(image + glare[None], 0, 1).astype(np.float32)


def _bezel(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    width = int(rng.integers(2, 6))
    side = int(rng.integers(4))
    image = image.copy()
    dark = rng.uniform(0.03, 0.1)
    if side == 0:
        image[:, :width] = dark
    elif side == 1:
        image[:, -width:] = dark
    elif side == 2:
        image[:, :, :width] = dark
    else:
        image[:, :, -width:] = dark
    return image


def mask_attack(live: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 3D mask of the face: smoothed skin, no specular highlight, a rigid edge and the material's tint."""
    smooth = np.stack([ndimage.gaussian_filter(c, rng.uniform(1.0, 1.6)) for c in live])
    image = np.minimum(smooth, np.quantile(smooth, 0.9))  # the matte surface has no highlight
    tint = np.array([rng.uniform(0.95, 1.08), rng.uniform(0.92, 1.0), rng.uniform(0.85, 0.98)], dtype=np.float32)
    image = image * tint[:, None, None]
    ys, xs = _grid()
    radius = np.sqrt((xs / rng.uniform(0.75, 0.9)) ** 2 + (ys / rng.uniform(0.85, 1.0)) ** 2)
    edge = np.exp(-((radius - 1) ** 2) / 0.002)
    return np.clip(image * (1 - 0.45 * edge)[None], 0, 1).astype(np.float32)


ATTACK_RENDERERS = {"print": print_attack, "replay": replay_attack, "mask": mask_attack}


def to_pil(image: np.ndarray):
    """A PIL RGB image of ``image`` [3, H, W] in [0, 1] (clipped, 8 bits)."""
    from PIL import Image

    return Image.fromarray((np.clip(image, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8))


def from_pil(pil) -> np.ndarray:
    """[3, H, W] float32 in [0, 1] of a PIL image (as RGB)."""
    return (np.asarray(pil.convert("RGB"), dtype=np.float32) / 255.0).transpose(2, 0, 1).copy()


def jpeg(pil, quality: int):
    """``pil`` stored as JPEG at ``quality`` and read back (RGB)."""
    from PIL import Image

    buffer = io.BytesIO()
    pil.save(buffer, "JPEG", quality=quality)
    return Image.open(buffer, formats=("JPEG",)).convert("RGB")


def capture(image: np.ndarray, domain: CaptureDomain, rng: np.random.Generator) -> np.ndarray:
    """The camera of ``domain`` recording ``image`` [3, SIZE, SIZE]: resolution, blur, white balance, noise,
    JPEG, back to ``SIZE``."""
    from PIL import Image

    sensor = np.asarray(to_pil(image).resize((domain.resolution,) * 2, Image.BILINEAR), dtype=np.float32) / 255.0
    sensor = ndimage.gaussian_filter(sensor, (domain.blur, domain.blur, 0))  # [h, w, 3]: the noise's layout
    sensor = sensor * np.asarray(domain.white_balance, dtype=np.float32)
    sensor = sensor + rng.normal(0, domain.noise, sensor.shape)
    return from_pil(jpeg(to_pil(sensor.transpose(2, 0, 1)), domain.jpeg).resize((SIZE, SIZE), Image.BILINEAR))


def render_capture(face: np.ndarray, identity: int, kind: str, domain: str, seed: int) -> np.ndarray:
    """One capture [3, SIZE, SIZE] of ``face``: live or an attack, through ``domain``'s camera."""
    if kind not in KINDS:
        raise WorldError(f"unknown capture kind {kind!r}; use one of {', '.join(KINDS)}.")
    if domain not in DOMAINS:
        raise WorldError(f"unknown capture domain {domain!r}; use one of {', '.join(DOMAINS)}.")
    rng = _rng(seed, identity, list(DOMAINS).index(domain), KINDS.index(kind))
    image = live_face(face, identity, rng)
    if kind != "live":
        image = ATTACK_RENDERERS[kind](image, rng)
    return capture(image, DOMAINS[domain], rng)


def render(split: str, domains: Sequence[str] = tuple(DOMAINS), attacks: Sequence[str] = ATTACKS,
           live_per_identity: int = 3, spoofs_per_attack: int = 1, seed: int = 0) -> FaceImages:
    """Every capture of a split: for each identity and domain, ``live_per_identity`` live captures and
    ``spoofs_per_attack`` of each attack.

    Args:
        split: train, dev or test (disjoint identities).
        domains, attacks: which cameras and which attacks (a protocol leaves some out).
        live_per_identity, spoofs_per_attack: captures per identity and domain.
        seed: the world's seed; each capture's own seed is derived from it and the capture's keys.
    Returns:
        The captures, in a fixed order.
    """
    for attack in attacks:
        if attack not in ATTACKS:
            raise WorldError(f"unknown attack {attack!r}; use one of {', '.join(ATTACKS)}.")
    crops = [(int(i), real_faces()[i]) for i in split_identities(split)]
    return render_faces(crops, domains, attacks, live_per_identity, spoofs_per_attack, seed)


def render_faces(crops: Sequence[tuple[int, np.ndarray]], domains: Sequence[str], attacks: Sequence[str],
                 live_per_identity: int, spoofs_per_attack: int, seed: int) -> FaceImages:
    """Every capture of the given (identity key, 25x25 crop) pairs, in :func:`render`'s order and seeds (the
    held-out faces go through here with keys of their own)."""
    plan = [(identity, face, domain, kind, index)
            for identity, face in crops for domain in domains
            for kind, count in (("live", live_per_identity), *((a, spoofs_per_attack) for a in attacks))
            for index in range(count)]
    images = np.stack([render_capture(face, identity, kind, domain, seed * 1000 + index)
                       for identity, face, domain, kind, index in plan]) if plan else np.zeros((0, 3, SIZE, SIZE),
                                                                                             np.float32)
    kinds = np.array([p[3] for p in plan], dtype=object)
    return FaceImages(images, kinds == "live", kinds, np.array([p[2] for p in plan], dtype=object),
                      np.array([p[0] for p in plan], dtype=np.int64))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def image_files(paths: Sequence[Path]) -> list[Path]:
    """The image files among ``paths``, each folder replaced by its images in name order (other files in a
    folder are skipped; a named file is kept whatever its suffix, and read or refused by
    :func:`read_face_image`).

    Raises:
        WorldError: a path does not exist, or a folder holds no images.
    """
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise WorldError(f"{path} holds no images ({', '.join(IMAGE_SUFFIXES)}); add a few or name files.")
            files += found
        elif path.exists():
            files.append(path)
        else:
            raise WorldError(f"{path} does not exist; give image files or folders of them.")
    return files


def read_face_image(path: Path) -> np.ndarray:
    """[3, SIZE, SIZE] in [0, 1]: a face crop from an image file (PNG, JPEG, WebP, BMP by its bytes), upright
    by its EXIF orientation, resized to the world's size.

    Raises:
        ImageError: the file is missing, too large, or not one of those images.
    """
    from effigy.images import read_image_file

    return _world_sized(read_image_file(path))


def decode_face_image(data: bytes, name: str = "the upload") -> np.ndarray:
    """[3, SIZE, SIZE] in [0, 1]: encoded bytes through effigy's one decoder (:func:`effigy.images.decode_image`:
    format allowlist by the bytes, pixel cap before decoding, EXIF orientation), resized to the world's size.

    Raises:
        ImageError: the bytes are not a PNG, JPEG, WebP or BMP image of sane size.
    """
    from effigy.images import decode_image

    return _world_sized(decode_image(data, name))


def _world_sized(pil) -> np.ndarray:
    from PIL import Image

    return from_pil(pil.resize((SIZE, SIZE), Image.BILINEAR))
