"""Active liveness by colour challenge-response, simulated on the face world (the remedy arXiv 2406.03684
recommends against digital injection).

The screen flashes a random sequence of colours while the camera records. Screen light reflects off a live
face: each frame's colour shifts towards the colour shown at that moment, strongest where the face turns
towards the screen (its centre) and weaker towards its rim. An injected stream (a deepfake, a digitally
replayed recording, adversarial frames) was not in front of this screen at this moment: it carries no
reflection, or the reflection of another sequence. A print reflects with the right timing but evenly (it is
flat); a screen replay emits its own light and reflects little; a 3D mask reflects like a face (a challenge
of this kind cannot tell it from one).

The verifier estimates each frame's reflected colour (the frame minus the session's mean, averaged over the
face) and accepts when (a) it correlates with the challenge sequence, (b) it is as strong as skin at arm's
length reflects, and (c) the response is stronger at the face's centre than at its rim. The thresholds are
set on live sessions of the development identities alone (see :meth:`Verifier.calibrate`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from effigy.errors import AdaptationError
from effigy.worlds.faces import DOMAINS, SIZE, capture, live_face

PALETTE = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [1, 1, 1], [0, 0, 0]],
                   dtype=np.float32)
REFLECTION = 0.12  # screen light on a face at arm's length, in image units
_YS, _XS = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / (SIZE - 1) * 2 - 1
_FACE = (_XS / 0.75) ** 2 + (_YS / 0.9) ** 2  # < 1 inside the face's ellipse
CURVED = np.sqrt(np.clip(1 - _FACE, 0, 1))  # a face's surface turned towards the screen: cosine of its normal
FLAT = (_FACE < 1).astype(np.float32)  # a sheet: the same everywhere on it
CENTRE, RIM = _FACE < 0.3, (_FACE > 0.55) & (_FACE < 0.95)


def random_challenge(rng: np.random.Generator, length: int = 8) -> np.ndarray:
    """[length, 3] screen colours, each a random palette entry different from the one before."""
    picks = [int(rng.integers(len(PALETTE)))]
    while len(picks) < length:
        pick = int(rng.integers(len(PALETTE) - 1))
        picks.append(pick + (pick >= picks[-1]))
    return PALETTE[picks]


def session(base: np.ndarray, reflected: np.ndarray | None, geometry: np.ndarray, strength: float,
            domain: str, rng: np.random.Generator, captured: bool = True) -> np.ndarray:
    """[T, 3, SIZE, SIZE] frames of ``base`` lit by the ``reflected`` colour sequence [T, 3] through
    ``geometry`` (no reflection when None), through ``domain``'s camera (or, ``captured`` False, as given:
    an injected stream's frames are made elsewhere)."""
    length = len(reflected) if reflected is not None else 8
    frames = []
    for t in range(length):
        frame = base.copy()
        if reflected is not None:
            frame = frame + strength * reflected[t][:, None, None] * geometry[None] * (0.5 + frame)
        frames.append(capture(frame, DOMAINS[domain], rng) if captured else np.clip(frame, 0, 1))
    return np.stack(frames).astype(np.float32)


@dataclass
class Verifier:
    """Accepts a session when its reflected colours follow the challenge, are as strong as a face's at arm's
    length, and are shaped like a face. The thresholds come from :meth:`calibrate` on live sessions."""

    min_correlation: float = 0.5
    min_strength: float = 0.02
    min_shape: float = 1.2

    @staticmethod
    def measures(frames: np.ndarray, challenge: np.ndarray) -> tuple[float, float, float]:
        """(correlation of the reflected colours with the challenge, the response's strength along the
        challenge at the face's centre, the centre-to-rim ratio of that response)."""
        response = frames - frames.mean(axis=0, keepdims=True)
        centre = response[:, :, CENTRE].mean(axis=2)  # [T, 3]
        rim = response[:, :, RIM].mean(axis=2)
        expected = challenge - challenge.mean(axis=0, keepdims=True)
        correlation = float(np.corrcoef(centre.ravel(), expected.ravel())[0, 1]) if centre.std() > 0 else 0.0
        along = lambda r: float((r * expected).sum() / ((expected ** 2).sum() + 1e-9))  # response along the challenge
        strength = along(centre)
        return (0.0 if np.isnan(correlation) else correlation), strength, strength / max(abs(along(rim)), 1e-4)

    def accepts(self, frames: np.ndarray, challenge: np.ndarray) -> bool:
        correlation, strength, shape = self.measures(frames, challenge)
        return correlation >= self.min_correlation and strength >= self.min_strength and shape >= self.min_shape

    @classmethod
    def calibrate(cls, live: list[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
                  false_accept: float = 0.01, bpcer: float = 0.02) -> Verifier:
        """Thresholds from live sessions alone (no attack is needed to set them):

        - correlation: the ``1 - false_accept`` quantile of the correlation of each live session with fresh
          random challenges it did not answer (what a stream that does not follow the challenge reaches);
        - strength: half the ``bpcer`` quantile of the live sessions' (a glossy or emissive surface, or an
          injected stream, reflects less than skin does);
        - shape: halfway between 1 (a flat reflector's centre-to-rim ratio) and the ``bpcer`` quantile of the
          live sessions' ratios.
        """
        if not live:
            raise AdaptationError("calibrating the verifier needs live sessions.")
        measured = np.array([cls.measures(frames, challenge) for frames, challenge in live])
        unanswered = [cls.measures(frames, random_challenge(rng, len(challenge)))[0]
                      for frames, challenge in live for _ in range(4)]
        low = np.quantile(measured, bpcer, axis=0)
        return cls(float(np.quantile(unanswered, 1 - false_accept)), 0.5 * float(low[1]), 0.5 * (1 + float(low[2])))


def live_session(face: np.ndarray, identity: int, challenge: np.ndarray, domain: str,
                 rng: np.random.Generator) -> np.ndarray:
    """A live person in front of the screen: the face reflects the challenge, shaped by its curvature."""
    return session(live_face(face, identity, rng), challenge, CURVED, REFLECTION, domain, rng)
