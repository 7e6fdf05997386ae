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
from scipy import ndimage
from torch import nn

from effigy.detect.fas.model import PrototypeFAS, class_similarity
from effigy.errors import AdaptationError
from effigy.worlds.faces import SIZE, from_pil, jpeg, live_face, to_pil

TAXONOMY = {
    "presentation": ("print", "replay", "mask"),
    "digital injection: adversarial noise": ("pgd", "apgd-ce"),
    "digital injection: deepfake": ("face swap",),
    "digital injection: digital replay": ("digital replay",),
}
INJECTION_JPEG = 85  # a virtual camera's encoder


class TwoLogits(nn.Module):
    """The prototype model as a two-class classifier (spoof, live) for attack libraries."""

    def __init__(self, model: PrototypeFAS) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.config.scale * class_similarity(self.model.features(images), self.model.prototypes())


def adversarial(model: PrototypeFAS, images: np.ndarray, method: str = "pgd", epsilon: float = 8 / 255,
                steps: int = 10, seed: int = 0) -> np.ndarray:
    """Spoof ``images`` [N, 3, SIZE, SIZE] perturbed (L-infinity <= ``epsilon``) to be scored live.

    Args:
        method: 'pgd' (Madry et al., random start, step epsilon / 4) or 'apgd-ce' (Croce and Hein, 2020).
    Returns:
        The perturbed images, clipped to [0, 1].
    """
    import torchattacks

    if not 0 < epsilon <= 1:
        raise AdaptationError(f"epsilon = {epsilon}: an L-infinity budget must be in (0, 1].")
    wrapped = TwoLogits(model).eval()
    torch.manual_seed(seed)
    if method == "pgd":
        attack = torchattacks.PGD(wrapped, eps=epsilon, alpha=epsilon / 4, steps=steps, random_start=True)
    elif method == "apgd-ce":
        attack = torchattacks.APGD(wrapped, eps=epsilon, steps=steps, loss="ce", seed=seed)
    else:
        raise AdaptationError(f"unknown adversarial attack {method!r}; use 'pgd' or 'apgd-ce'.")
    inputs = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    spoof = torch.zeros(len(inputs), dtype=torch.long)  # untargeted away from spoof = towards live
    return attack(inputs, spoof).detach().numpy()


def inject(image: np.ndarray, quality: int = INJECTION_JPEG) -> np.ndarray:
    """A frame fed into the stream by a virtual camera: encoded once, no sensor, optics or noise."""
    return from_pil(jpeg(to_pil(image), quality))


def face_swap(target: np.ndarray, source: np.ndarray, identity: int, rng: np.random.Generator) -> np.ndarray:
    """[3, SIZE, SIZE]: ``source``'s inner face (eyes, nose, mouth) blended into ``target``'s live rendering
    under a soft elliptical mask, colour-matched to the target's skin (a face swap as blending-based deepfake
    pipelines make it); not yet injected."""
    state = rng.bit_generator.state
    host = live_face(target, identity, rng)
    rng.bit_generator.state = state  # the same pose and light for the donor, so the parts line up
    donor = live_face(source, identity, rng)
    ys, xs = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) * 2 - 1
    ellipse = (xs / rng.uniform(0.55, 0.65)) ** 2 + ((ys - 0.08) / rng.uniform(0.7, 0.8)) ** 2
    mask = ndimage.gaussian_filter((ellipse <= 1).astype(np.float32), rng.uniform(2, 4))[None]
    inside = mask[0] > 0.5
    matched = np.stack([(d - d[inside].mean()) / (d[inside].std() + 1e-6) * h[inside].std() + h[inside].mean()
                        for d, h in zip(donor, host)])
    return np.clip(mask * matched + (1 - mask) * host, 0, 1).astype(np.float32)


def digital_replay(recorded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A recorded live capture re-encoded (rescaled, JPEG) as a screen-capture tool or a streaming app would,
    ready to be injected."""
    from PIL import Image

    scale = int(SIZE * rng.uniform(0.7, 0.9))
    stored = jpeg(to_pil(recorded).resize((scale, scale), Image.BILINEAR), int(rng.integers(60, 80)))
    return from_pil(stored.resize((SIZE, SIZE), Image.BILINEAR))
