"""The attacks of the digital-attack taxonomy (arXiv 2406.03684, https://arxiv.org/abs/2406.03684), one per
leaf, on the face world.

- presentation attacks (something held in front of the camera): print, screen replay, 3D mask - the face
  world's renderers, captured by the domain's camera;
- digital injection (frames fed into the stream, the camera bypassed):
  - adversarial noise: PGD and APGD-CE (torchattacks) on spoof captures, against the passive model's two
    logits, within an L-infinity budget;
  - deepfake: another identity's face blended into the target's (a face swap), injected;
  - digital replay: a recorded live capture of the target, re-encoded and injected.

Injected frames carry no presentation artefact, so a passive single-frame detector trained on presentation
attacks has nothing to see; that is the taxonomy paper's point, and why it recommends active
challenge-response (``effigy.detect.robustness.liveness``).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from effigy.detect.fas.model import PrototypeFAS, class_similarity
from effigy.errors import AdaptationError
from effigy.worlds import deepfakes
from effigy.worlds.faces import SIZE, from_pil, jpeg, posed_live_face, to_pil

TAXONOMY = {
    "presentation": ("print", "replay", "mask"),
    "digital injection: adversarial noise": ("pgd", "apgd-ce"),
    "digital injection: deepfake": ("face swap",),
    "digital injection: digital replay": ("digital replay",),
}
# The standards' words for each leaf: ISO/IEC 30107-3 names presentation attack instrument (PAI) species; CEN/TS
# 18099 names the injection attack instrument (IAI: here a virtual camera feeding a stream) and the attack media
# it injects
STANDARD_TYPE = {"presentation": "PAI species (ISO/IEC 30107-3)",
                 "digital injection: adversarial noise": "IAI: virtual camera; media: adversarial (CEN/TS 18099)",
                 "digital injection: deepfake": "IAI: virtual camera; media: deepfake (CEN/TS 18099)",
                 "digital injection: digital replay": "IAI: virtual camera; media: replayed video (CEN/TS 18099)"}
INJECTION_JPEG = 85  # a virtual camera's encoder


class TwoLogits(nn.Module):
    """The prototype model as a two-class classifier (spoof, live) for attack libraries."""

    def __init__(self, model: PrototypeFAS) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.config.scale * class_similarity(self.model.features(images), self.model.prototypes())


class FakeLogits(nn.Module):
    """A deepfake detector (any module with ``logit(images)``, the logit of *fake*) as a two-class classifier
    (real, fake) for attack libraries."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logit = self.detector.logit(images)
        return torch.stack([torch.zeros_like(logit), logit], dim=1)


def adversarial(model: PrototypeFAS | nn.Module, images: np.ndarray, method: str = "pgd", epsilon: float = 8 / 255,
                steps: int = 10, seed: int = 0, away_from: int = 0) -> np.ndarray:
    """Attack ``images`` [N, 3, SIZE, SIZE], perturbed (L-infinity <= ``epsilon``) away from their class.

    Args:
        model: the passive FAS model (wrapped as two logits, spoof and live), or any two-logit classifier
            (a deepfake detector through :class:`FakeLogits`).
        method: 'pgd' (Madry et al., random start, step epsilon / 4) or 'apgd-ce' (Croce and Hein, 2020).
        away_from: the images' true class, which the attack pushes them out of (0: spoof, for the FAS model;
            1: fake, for a deepfake detector).
    Returns:
        The perturbed images, clipped to [0, 1].
    """
    import torchattacks

    if not 0 < epsilon <= 1:
        raise AdaptationError(f"epsilon = {epsilon}: an L-infinity budget must be in (0, 1].")
    wrapped = (TwoLogits(model) if isinstance(model, PrototypeFAS) else model).eval()
    torch.manual_seed(seed)
    if method == "pgd":
        attack = torchattacks.PGD(wrapped, eps=epsilon, alpha=epsilon / 4, steps=steps, random_start=True)
    elif method == "apgd-ce":
        attack = torchattacks.APGD(wrapped, eps=epsilon, steps=steps, loss="ce", seed=seed)
    else:
        raise AdaptationError(f"unknown adversarial attack {method!r}; use 'pgd' or 'apgd-ce'.")
    inputs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    labels = torch.full((len(inputs),), away_from, dtype=torch.long)  # untargeted: out of the true class
    return attack(inputs, labels).detach().numpy()


def inject(image: np.ndarray, quality: int = INJECTION_JPEG) -> np.ndarray:
    """A frame fed into the stream by a virtual camera: encoded once, no sensor, optics or noise."""
    return from_pil(jpeg(to_pil(image), quality))


def face_swap(target: np.ndarray, source: np.ndarray, identity: int, rng: np.random.Generator) -> np.ndarray:
    """[3, SIZE, SIZE]: ``source``'s face swapped into ``target``'s live rendering by the face world's swap
    (``effigy.worlds.deepfakes.face_swap``: the donor in the target's pose, colour-matched, blended); not
    yet injected."""
    host, pose = posed_live_face(target, identity, rng)
    return deepfakes.face_swap(host, pose, source, identity, rng).image


def digital_replay(recorded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A recorded live capture re-encoded (rescaled, JPEG) as a screen-capture tool or a streaming app would,
    ready to be injected."""
    from PIL import Image

    scale = int(SIZE * rng.uniform(0.7, 0.9))
    stored = jpeg(to_pil(recorded).resize((scale, scale), Image.BILINEAR), int(rng.integers(60, 80)))
    return from_pil(stored.resize((SIZE, SIZE), Image.BILINEAR))
