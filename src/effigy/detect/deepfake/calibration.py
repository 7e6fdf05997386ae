"""The operating point of a deepfake detector: a temperature that makes P(fake) mean what it says, and the
threshold at which at most a target share of real images is called fake.

Both are fitted on the forgery world's dev identities (never trained on, never tested on), in the model's own
forgery families and capture domains: temperature scaling (Guo et al. 2017, https://arxiv.org/abs/1706.04599) on
real and fake dev captures (one parameter: AUC and EER are unchanged), then the threshold on real dev images
alone (the deployment rule: BPCER, real images called fake, at most ``target_bpcer``). The real dev images are
of two kinds, the dev identities' world captures and their own LFW photos (whole and after benign processing),
and the threshold keeps *each* kind's BPCER within the target: a threshold fitted on the captures alone let a
quarter of the held-out identities' photos be called fake (issue 45, checks/calibration.md). The result is
stored with the model (its manifest record's ``operating_point``) and used by `detect`, `serve` and the bench.
"""
from __future__ import annotations

import numpy as np

from effigy.detect.batches import map_face_batches
from effigy.detect.deepfake.model import DeepfakeConfig, DeepfakeEncoder
from effigy.metrics.detection import expected_calibration_error, fit_temperature, threshold_at_bpcer
from effigy.worlds.deepfakes import ForgeryImages, render_forgeries
from effigy.worlds.faces import real_faces, split_identities

DEV_REALS, DEV_FAKES = 4, 2  # captures per dev identity and domain: real ones, and fakes per family
TARGET_BPCER = 0.05


def calibration_set(config: DeepfakeConfig, seed: int = 0) -> ForgeryImages:
    """The dev identities' real captures and fakes, in the model's training families and domains."""
    return render_forgeries("dev", tuple(config.families), tuple(config.domains), DEV_REALS, DEV_FAKES, seed)


def lfw_photos(split: str) -> np.ndarray:
    """[N, 3, SIZE, SIZE] the LFW photos of a split's identities (scikit-image's 25x25 crops), whole and after
    benign processing, read as `effigy detect deepfake` reads a small image (a face crop)."""
    from PIL import Image

    from effigy.detect.faces import benign_faces

    return benign_faces(Image.fromarray((real_faces()[identity] * 255).astype(np.uint8)).convert("RGB")
                        for identity in split_identities(split))


def fake_logits(model: DeepfakeEncoder, images: np.ndarray) -> np.ndarray:
    """[N] raw fake logits (before any temperature)."""
    return map_face_batches(model.logit, images, 128).numpy()


def fit_operating_point(model: DeepfakeEncoder, config: DeepfakeConfig, target_bpcer: float = TARGET_BPCER,
                        seed: int = 0) -> dict:
    """The temperature and the threshold of ``model`` on its calibration set.

    Args:
        model: a deepfake detector (its own temperature is ignored: raw logits are used).
        config: its training config (which families and domains it knows).
        target_bpcer: the share of each kind of real dev image the threshold may call fake.
        seed: the world's seed for the dev captures.
    Returns:
        ``{"threshold", "threshold_by_source", "temperature", "target_bpcer", "calibrated_on", "real_images"
        (per source), "fake_images", "ece_before", "ece_after"}`` (thresholds on the calibrated P(fake); the
        threshold is the strictest that meets the target on every source).
    """
    data = calibration_set(config, seed)
    logits = fake_logits(model, data.images)
    scaling = temperature_scaling(logits, data.fake)
    reals = {"world captures": logits[~data.fake], "LFW photos": fake_logits(model, lfw_photos("dev"))}
    by_source = {source: threshold_at_bpcer(sigmoid(values / scaling["temperature"]), target_bpcer)
                 for source, values in reals.items()}
    return {"threshold": max(by_source.values()), "threshold_by_source": by_source, **scaling,
            "target_bpcer": target_bpcer, "calibrated_on": "the forgery world's dev identities ("
            + "+".join(config.families) + "; " + "+".join(config.domains) + f"; seed {seed}) and their LFW photos",
            "real_images": {source: len(values) for source, values in reals.items()},
            "fake_images": int(data.fake.sum())}


def temperature_scaling(logits: np.ndarray, fake: np.ndarray) -> dict:
    """``{"temperature", "ece_before", "ece_after"}``: the temperature fitted on raw fake logits and labelled
    faces, and the expected calibration error of P(fake) without and with it."""
    temperature = fit_temperature(logits, fake)
    return {"temperature": temperature, "ece_before": expected_calibration_error(sigmoid(logits), fake),
            "ece_after": expected_calibration_error(sigmoid(logits / temperature), fake)}


def sigmoid(values: np.ndarray) -> np.ndarray:
    """The logistic function of logits (numpy)."""
    return 1 / (1 + np.exp(-values))
