"""Families of face forgeries on the face world, each fake with a record of what was done where.

The real faces are the face world's live captures (``effigy.worlds.faces``: real LFW crops, posed, lit,
through a capture domain). A forgery is made on the clean face, before the camera, and then goes through the
same camera as the real ones, as a forged video frame would. The LFW crops are aligned, so the regions a
landmarker would give (inner face, eyes, nose, mouth) are fixed ellipses of the aligned frame, moved by each
face's pose.

Families (DF40-style: several manipulation kinds, so that a detector can be trained on some and tested on the
others):

- ``sbi``: self-blended image (Shiono and Yamasaki, CVPR 2022): the face blended with a colour-jittered,
  re-sampled, slightly shifted copy of itself through a blurred inner-face mask;
- ``swap``: another identity's inner face, colour-matched to the target's skin and blended in (the Face X-ray
  setting);
- ``reenact``: the mouth or the eyes moved by a local displacement field (expression transfer's footprint);
- ``upsample``: the inner face re-synthesised by a generator's upsampler: 2x transposed-convolution
  checkerboard and a periodic spectral peak;
- ``synthetic``: an entirely generated face: a crop sampled from the shipped face DiT (``dit-faces``, trained
  on the train split's real crops), posed, lit and captured like a real one.

Every forgery changes its region's pixels only (``Forgery.mask`` is its support; a synthetic face's is the
whole frame); ``ForgeryImages.region`` and ``artifact`` say what a caption or an explanation should name.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Sequence

import numpy as np
from scipy import ndimage

from effigy.errors import WorldError
from effigy.worlds.faces import (
    DOMAINS,
    SIZE,
    Pose,
    _rng,
    capture,
    pose_plane,
    posed_live_face,
    real_faces,
    split_identities,
)

FAMILIES = ("sbi", "swap", "reenact", "upsample", "synthetic")
# Regions of the aligned 64x64 frame (before pose): centre row, centre column, half-height, half-width.
REGIONS = {"face": (31.0, 28.0, 23.0, 17.0), "eyes": (19.5, 27.0, 6.0, 16.0), "nose": (31.0, 28.0, 8.0, 6.0),
           "mouth": (45.0, 28.0, 5.5, 10.0)}
ARTIFACTS = {"sbi": "blending boundary and colour mismatch of the face with itself",
             "swap": "another person's face blended in, with a boundary and skin-tone seam",
             "reenact": "warped {region}: geometry moved against the rest of the face",
             "upsample": "checkerboard and periodic spectral peaks of a generator's upsampler",
             "synthetic": "an entirely generated face: a small generator's smoothed, averaged features"}
SYNTHETIC_POOL = 200  # generated crops per world seed; a synthetic capture draws one (an unseen test family)


@dataclass(frozen=True)
class Forgery:
    """One forged clean face [3, SIZE, SIZE], the support of its change [SIZE, SIZE] (0 outside, up to 1),
    and what was done: family, region, artifact, donor identity (-1 for none)."""

    image: np.ndarray
    mask: np.ndarray
    family: str
    region: str
    artifact: str
    donor: int = -1
    cues: str = ""  # what the change looks like on the pixels (visible_cues), in words every family shares


def region_mask(region: str, pose: Pose, blur: float = 0.0) -> np.ndarray:
    """[SIZE, SIZE] in [0, 1]: the region's ellipse where the posed face has it, optionally softened."""
    if region not in REGIONS:
        raise WorldError(f"unknown face region {region!r}; use one of {', '.join(REGIONS)}.")
    cy, cx, hy, hx = REGIONS[region]
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    ellipse = (((ys - cy) / hy) ** 2 + ((xs - cx) / hx) ** 2 <= 1).astype(np.float32)
    if blur > 0:
        ellipse = ndimage.gaussian_filter(ellipse, blur)
    return np.clip(pose_plane(ellipse, pose), 0, 1)


def _blend(target: np.ndarray, source: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return (mask[None] * source + (1 - mask[None]) * target).astype(np.float32)


def _support(mask: np.ndarray) -> np.ndarray:
    """The mask with what is below 1/255 cut to 0, so that 'outside' is exactly unchanged."""
    return np.where(mask >= 1 / 255, mask, 0).astype(np.float32)


def self_blend(live: np.ndarray, pose: Pose, rng: np.random.Generator) -> Forgery:
    """SBI: the face blended with a jittered copy of itself (colour gains and brightness, down-up sampling or
    sharpening, a sub-pixel shift and scale) through the inner-face mask, blurred, hardened, blurred again
    and scaled by a random opacity."""
    source = live * rng.uniform(0.88, 1.12, 3).astype(np.float32)[:, None, None] + rng.uniform(-0.06, 0.06)
    if rng.random() < 0.5:
        factor = rng.uniform(0.4, 0.7)
        source = np.stack([ndimage.zoom(ndimage.zoom(c, factor, order=1), SIZE / round(SIZE * factor), order=1)[:SIZE, :SIZE]
                           for c in source])
    else:
        source = source + rng.uniform(0.5, 1.0) * (source - np.stack([ndimage.gaussian_filter(c, 1.0) for c in source]))
    shift, scale = rng.uniform(-1.5, 1.5, 2), rng.uniform(0.96, 1.04)
    source = np.stack([ndimage.affine_transform(c, np.eye(2) / scale, -shift, order=1, mode="nearest") for c in source])
    mask = region_mask("face", pose, blur=rng.uniform(1.0, 3.0))
    mask = ndimage.gaussian_filter((mask > rng.uniform(0.3, 0.7)).astype(np.float32), rng.uniform(1.0, 2.5))
    mask = _support(mask * rng.choice([0.5, 0.75, 1.0, 1.0]))
    return Forgery(np.clip(_blend(live, source, mask), 0, 1), mask, "sbi", "face", ARTIFACTS["sbi"])


def face_swap(live: np.ndarray, pose: Pose, donor_face: np.ndarray, donor: int, rng: np.random.Generator) -> Forgery:
    """Another identity's face rendered in the target's pose and light, its colours matched to the target's
    inside the inner-face mask (mean and spread per channel), blended through a softened mask."""
    donor_live, _ = posed_live_face(donor_face, donor, rng, pose)
    mask = _support(region_mask("face", pose, blur=rng.uniform(1.5, 3.0)))
    inside = mask > 0.5
    matched = np.stack([(d - d[inside].mean()) / (d[inside].std() + 1e-6) * t[inside].std() + t[inside].mean()
                        for d, t in zip(donor_live, live)])
    return Forgery(np.clip(_blend(live, matched, mask), 0, 1), mask, "swap", "face", ARTIFACTS["swap"], donor)


def reenact(live: np.ndarray, pose: Pose, rng: np.random.Generator) -> Forgery:
    """The mouth or the eyes moved by a smooth displacement (stretched or squashed about their centre, and
    shifted sideways), which fades to zero at the region's edge."""
    region = str(rng.choice(["mouth", "eyes"]))
    mask = _support(region_mask(region, pose, blur=1.0))
    stretch, sideways = rng.uniform(1.5, 3.0) * rng.choice([-1.0, 1.0], 2)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    centre_y = (ys * mask).sum() / mask.sum()
    dy = stretch * mask * (ys - centre_y) / REGIONS[region][2]
    dx = 0.5 * sideways * mask
    warped = np.stack([ndimage.map_coordinates(c, [ys + dy, xs + dx], order=1, mode="nearest") for c in live])
    return Forgery(np.clip(warped, 0, 1).astype(np.float32), mask, "reenact", region,
                   ARTIFACTS["reenact"].format(region=region))


def upsample_artifacts(live: np.ndarray, pose: Pose, rng: np.random.Generator) -> Forgery:
    """The inner face as a generator would draw it: 2x down, then a transposed-convolution upsampler (zeros
    inserted, an uneven 3x3 kernel: the checkerboard), plus a periodic pattern (a spectral peak)."""
    low = np.stack([c.reshape(SIZE // 2, 2, SIZE // 2, 2).mean(axis=(1, 3)) for c in live])
    zeros = np.zeros_like(live)
    zeros[:, ::2, ::2] = low
    kernel = np.outer([0.5, 1.0, 0.5], [0.5, 1.0, 0.5]) * rng.uniform(0.8, 1.2, (3, 3))  # uneven overlap
    up = np.stack([ndimage.convolve(c, kernel, mode="nearest") for c in zeros])
    period, angle = rng.uniform(3.0, 5.0), rng.uniform(0, np.pi)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    peak = 0.025 * np.sin(2 * np.pi * (np.cos(angle) * xs + np.sin(angle) * ys) / period)
    mask = _support(region_mask("face", pose, blur=1.5))
    return Forgery(np.clip(_blend(live, up + peak[None], mask), 0, 1), mask, "upsample", "face",
                   ARTIFACTS["upsample"])


def visible_cues(live: np.ndarray, forgery: Forgery) -> str:
    """What the change looks like, measured on the pixels rather than read from the recipe, in words every
    family shares (so that a caption can say what an unseen forgery would also show): the texture inside the
    support (blurred / sharpened, by its fine detail against the real face's), its colour (brighter / darker /
    warmer / cooler) and whether a seam shows where the support fades out."""
    inside = forgery.mask >= 0.5
    if not inside.any():
        return "same texture, same colour, no seam"
    detail = lambda x: np.abs(x - ndimage.gaussian_filter(x, (0, 1.0, 1.0))).mean(0)[inside].mean()  # noqa: E731
    ratio = detail(forgery.image) / (detail(live) + 1e-6)
    texture = "blurred" if ratio < 0.85 else "sharpened" if ratio > 1.15 else "same texture"
    shift = (forgery.image - live)[:, inside].mean(axis=1)  # per channel
    brightness, cast = float(shift.mean()), float(shift[0] - shift[2])
    if max(abs(brightness), abs(cast)) < 0.015:
        colour = "same colour"
    elif abs(brightness) >= abs(cast):
        colour = "brighter" if brightness > 0 else "darker"
    else:
        colour = "warmer" if cast > 0 else "cooler"
    ring = (forgery.mask > 0.1) & (forgery.mask < 0.9)
    seam = ring.any() and float(np.abs(forgery.image - live).mean(0)[ring].mean()) > 0.03
    return f"{texture}, {colour}, {'visible seam' if seam else 'no seam'}"


@lru_cache(maxsize=2)
def synthetic_crops(seed: int, count: int = SYNTHETIC_POOL) -> np.ndarray:
    """[count, 25, 25] crops sampled (seeded) from the shipped face DiT, framed as the LFW crops; generated once
    a process, since sampling a diffusion model is the slow part of rendering this family."""
    from effigy.models.generators.dit_faces import generate_faces
    from effigy.models.zoo import load_zoo_model

    transformer, config = load_zoo_model("dit-faces")
    return generate_faces(transformer, config, count, seed)


def synthetic_face(crop: np.ndarray, identity: int, light: np.random.Generator) -> Forgery:
    """A generated crop rendered as the live face would be: ``light`` is the real capture's own generator
    state, so pose, light and skin tone match the real face's and only the face itself differs."""
    image, _ = posed_live_face(crop, identity, light)
    return Forgery(image, np.ones((SIZE, SIZE), np.float32), "synthetic", "face", ARTIFACTS["synthetic"])


@dataclass
class ForgeryImages:
    """Rendered captures, one row each: images [N, 3, SIZE, SIZE] in [0, 1]; ``fake``; ``family`` ('real' or
    the forgery family); ``region`` and ``artifact`` (empty for real rows); ``domain``; ``identity`` (the
    crop's index in ``lfw_subset``); ``donor`` (the swapped-in identity, -1 for none)."""

    images: np.ndarray
    fake: np.ndarray
    family: np.ndarray
    region: np.ndarray
    artifact: np.ndarray
    domain: np.ndarray
    identity: np.ndarray
    donor: np.ndarray
    cues: np.ndarray

    FIELDS = ("images", "fake", "family", "region", "artifact", "domain", "identity", "donor", "cues")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, rows: np.ndarray) -> ForgeryImages:
        """The rows picked by an index or boolean array."""
        return ForgeryImages(*(getattr(self, f)[rows] for f in self.FIELDS))

    @staticmethod
    def concat(parts: Sequence[ForgeryImages]) -> ForgeryImages:
        return ForgeryImages(*(np.concatenate([getattr(p, f) for p in parts]) for f in ForgeryImages.FIELDS))


def forge(family: str, live: np.ndarray, pose: Pose, rng: np.random.Generator,
          donor: tuple[int, np.ndarray] | None = None) -> Forgery:
    """One forgery of the clean face ``live`` (posed by ``pose``); ``donor`` (identity, crop) for a swap."""
    if family == "swap":
        if donor is None:
            raise WorldError("a face swap needs a donor face: give (identity, 25x25 crop).")
        return face_swap(live, pose, donor[1], donor[0], rng)
    makers = {"sbi": self_blend, "reenact": reenact, "upsample": upsample_artifacts}
    if family == "synthetic":
        raise WorldError("a synthetic face is generated, not edited from a live face: use render_forgery.")
    if family not in makers:
        raise WorldError(f"unknown forgery family {family!r}; use one of {', '.join(FAMILIES)}.")
    return makers[family](live, pose, rng)


_DEEPFAKE_KEY = 7  # keeps these draws apart from the anti-spoofing captures of the same identity


def render_forgery(identity: int, face: np.ndarray, family: str, domain: str, index: int, seed: int,
                   donors: Sequence[int] = (), pool: np.ndarray | None = None) -> tuple[np.ndarray, Forgery | None]:
    """One capture through ``domain``'s camera: the real face (``family='real'``) or a forgery of it (a
    swap's donor drawn from ``donors``). Every family's capture with the same (identity, domain, index)
    forges the very face of the real capture with those keys: real and fake come in pairs, as SBI trains.
    ``pool``: the generated crops a synthetic capture draws from (default: the shipped face DiT's; a
    quantized generator's pool renders the same draws from another generator)."""
    if domain not in DOMAINS:
        raise WorldError(f"unknown capture domain {domain!r}; use one of {', '.join(DOMAINS)}.")
    kinds = ("real", *FAMILIES)
    if family not in kinds:
        raise WorldError(f"unknown forgery family {family!r}; use one of {', '.join(FAMILIES)}.")
    keys = (seed * 1000 + index, _DEEPFAKE_KEY, identity, list(DOMAINS).index(domain))
    base = _rng(*keys, 0)
    live, pose = posed_live_face(face, identity, base)
    if family == "real":
        return capture(live, DOMAINS[domain], base), None
    rng = _rng(*keys, kinds.index(family))
    donor = None
    if family == "swap":
        others = [d for d in donors if d != identity]
        if not others:
            raise WorldError("a face swap needs another identity in the split to take the face from.")
        chosen = int(rng.choice(others))
        donor = (chosen, real_faces()[chosen])
    if family == "synthetic":
        crop = (synthetic_crops(seed) if pool is None else pool)[int(rng.integers(SYNTHETIC_POOL))]
        forgery = synthetic_face(crop, identity, _rng(*keys, 0))
    else:
        forgery = forge(family, live, pose, rng, donor)
    forgery = replace(forgery, cues=visible_cues(live, forgery))
    return capture(forgery.image, DOMAINS[domain], rng), forgery


def render_forgeries(split: str, families: Sequence[str] = FAMILIES, domains: Sequence[str] = tuple(DOMAINS),
                     reals_per_identity: int = 2, fakes_per_family: int = 1, seed: int = 0) -> ForgeryImages:
    """Every capture of a split: for each identity and domain, ``reals_per_identity`` real captures and
    ``fakes_per_family`` forgeries of each family (swap donors from the same split, so splits stay disjoint).

    Args:
        split: train, dev or test (the face world's identity-disjoint splits).
        families: which forgery families (a protocol holds some out).
        domains: which capture domains.
        reals_per_identity, fakes_per_family: captures per identity and domain.
        seed: the world's seed; each capture's own seed comes from it and the capture's keys.
    Returns:
        The captures, in a fixed order.
    """
    identities = [int(i) for i in split_identities(split)]
    crops = [(i, real_faces()[i]) for i in identities]
    return render_forgery_crops(crops, families, domains, reals_per_identity, fakes_per_family, seed, identities)


def render_forgery_crops(crops: Sequence[tuple[int, np.ndarray]], families: Sequence[str], domains: Sequence[str],
                         reals_per_identity: int, fakes_per_family: int, seed: int,
                         donors: Sequence[int], pool: np.ndarray | None = None) -> ForgeryImages:
    """Every capture of the given (identity key, 25x25 crop) pairs, in :func:`render_forgeries`'s order and
    seeds, swap donors drawn from ``donors`` (the held-out faces go through here with keys of their own)."""
    plan = [(identity, face, domain, family, index) for identity, face in crops for domain in domains
            for family, count in (("real", reals_per_identity), *((f, fakes_per_family) for f in families))
            for index in range(count)]
    rows = [render_forgery(i, face, family, domain, index, seed, donors, pool)
            for i, face, domain, family, index in plan]
    images = np.stack([image for image, _ in rows]) if rows else np.zeros((0, 3, SIZE, SIZE), np.float32)
    forgeries = [f for _, f in rows]
    column = lambda values: np.array(values, dtype=object)  # noqa: E731
    return ForgeryImages(
        images, np.array([f is not None for f in forgeries]), column([p[3] for p in plan]),
        column([f.region if f else "" for f in forgeries]), column([f.artifact if f else "" for f in forgeries]),
        column([p[2] for p in plan]), np.array([p[0] for p in plan], dtype=np.int64),
        np.array([f.donor if f else -1 for f in forgeries], dtype=np.int64), column([f.cues if f else "" for f in forgeries]))
