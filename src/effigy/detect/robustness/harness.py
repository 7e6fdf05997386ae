"""The robustness harness: every leaf of the attack taxonomy against the passive model (and its adaptors) and
against the active challenge-response verifier, on the face world's test identities.

Passive: one frame per attempt, accepted when the model's P(live) reaches its source threshold. Active: an
8-frame session under a random colour challenge, accepted by the verifier. APCER per attack, BPCER on live
attempts, for both, side by side.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from effigy.detect.fas.adapt import Adaptor, SourceView
from effigy.detect.fas.model import PrototypeFAS, embed
from effigy.detect.fas.protocol import draw_shots, source_threshold
from effigy.detect.robustness.attacks import adversarial, digital_replay, face_swap, inject
from effigy.detect.robustness.liveness import (
    CURVED,
    FLAT,
    REFLECTION,
    Verifier,
    live_session,
    random_challenge,
    session,
)
from effigy.worlds.faces import ATTACK_RENDERERS, DOMAINS, live_face, real_faces, render, split_identities

PRESENTATION_REFLECTION = {"print": (FLAT, 0.9), "replay": (FLAT, 0.2), "mask": (CURVED, 1.0)}  # geometry, strength


@dataclass
class HarnessSettings:
    """Which domains, how many attempts, which adversarial budget."""

    domains: tuple[str, ...] = tuple(DOMAINS)
    attempts_per_identity: int = 1
    epsilon: float = 8 / 255
    attack_steps: int = 10
    adaptation_shots: int = 5
    seed: int = 0


@dataclass
class Attempts:
    """For each attack (and 'live'): the single frames the passive model sees and the sessions the verifier
    sees, with each session's challenge."""

    frames: dict[str, list[np.ndarray]] = field(default_factory=dict)
    sessions: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def add(self, kind: str, frame: np.ndarray, frames: np.ndarray, challenge: np.ndarray) -> None:
        self.frames.setdefault(kind, []).append(frame)
        self.sessions.setdefault(kind, []).append((frames, challenge))


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, 77, *keys])


def presentation_attempts(attempts: Attempts, identity: int, domain: str, key: int, seed: int) -> None:
    """Live and each presentation attack: a captured frame and a session in front of the challenge screen."""
    face = real_faces()[identity]
    d = list(DOMAINS).index(domain)
    for k, kind in enumerate(("live", *ATTACK_RENDERERS)):
        rng = _rng(seed, identity, d, key, k)
        challenge = random_challenge(rng)
        if kind == "live":
            frames = live_session(face, identity, challenge, domain, rng)
        else:
            geometry, strength = PRESENTATION_REFLECTION[kind]
            base = ATTACK_RENDERERS[kind](live_face(face, identity, rng), rng)
            frames = session(base, challenge, geometry, REFLECTION * strength, domain, rng)
        attempts.add(kind, frames[0], frames, challenge)


def injection_attempts(attempts: Attempts, identity: int, donor: int, domain: str, key: int, seed: int) -> None:
    """A face swap (donor into identity) and a digital replay of a recorded live session, both injected; the
    injector does not know the challenge, so a swap carries a guessed reflection and a replay the old one."""
    faces = real_faces()
    d = list(DOMAINS).index(domain)
    rng = _rng(seed, identity, d, key, 10)
    challenge = random_challenge(rng)
    swapped = face_swap(faces[identity], faces[donor], identity, rng)
    guessed = session(swapped, random_challenge(rng), CURVED, REFLECTION, domain, rng, captured=False)
    attempts.add("face swap", inject(swapped), np.stack([inject(f) for f in guessed]), challenge)
    old_challenge = random_challenge(rng)
    recorded = live_session(faces[identity], identity, old_challenge, domain, rng)
    replayed = np.stack([inject(digital_replay(f, rng)) for f in recorded])
    attempts.add("digital replay", replayed[0], replayed, random_challenge(rng))


def adversarial_attempts(attempts: Attempts, model: PrototypeFAS, settings: HarnessSettings) -> None:
    """PGD and APGD-CE on the print captures (white-box on the passive model), injected as static streams."""
    prints = np.stack(attempts.frames["print"])
    for method in ("pgd", "apgd-ce"):
        perturbed = adversarial(model, prints, method, settings.epsilon, settings.attack_steps, settings.seed)
        for image in perturbed:
            attempts.add(method, image, np.repeat(image[None], 8, axis=0), random_challenge(_rng(settings.seed, 99)))


def build_attempts(model: PrototypeFAS, settings: HarnessSettings) -> Attempts:
    """Every attempt on the test identities, in every chosen domain."""
    attempts = Attempts()
    identities = split_identities("test")
    for domain in settings.domains:
        for key in range(settings.attempts_per_identity):
            for i, identity in enumerate(identities):
                presentation_attempts(attempts, int(identity), domain, key, settings.seed)
                injection_attempts(attempts, int(identity), int(identities[(i + 1) % len(identities)]), domain, key,
                                   settings.seed)
    adversarial_attempts(attempts, model, settings)
    return attempts


def calibrate_verifier(settings: HarnessSettings) -> Verifier:
    """The verifier's thresholds from live sessions of the development identities."""
    live = []
    for domain in settings.domains:
        for identity in split_identities("dev"):
            rng = _rng(settings.seed, int(identity), list(DOMAINS).index(domain), 1000)
            challenge = random_challenge(rng)
            live.append((live_session(real_faces()[identity], int(identity), challenge, domain, rng), challenge))
    return Verifier.calibrate(live, _rng(settings.seed, 2000))


def passive_scorers(model: PrototypeFAS, adaptors: list[Adaptor], settings: HarnessSettings) -> dict:
    """The passive model and each adaptor (fitted on a few samples of the chosen domains' dev identities) as
    feature scorers."""
    source = SourceView(model.prototypes().detach(), model.config.scale)
    pool = render("dev", list(settings.domains), seed=settings.seed)
    rows = draw_shots(pool.live, settings.adaptation_shots, np.random.default_rng(settings.seed))
    features = embed(model, pool.images)
    scorers = {}
    for adaptor in adaptors:
        if not adaptor.uses_labels:
            scorers[adaptor.name] = adaptor.fit(source, features, None)
            continue
        chosen = rows[pool.live[rows]] if adaptor.one_class else rows
        labels = torch.from_numpy(pool.live[chosen].astype(np.int64))
        scorers[adaptor.name] = adaptor.fit(source, features[chosen], labels)
    return scorers


def run_harness(model: PrototypeFAS, adaptors: list[Adaptor], settings: HarnessSettings) -> dict:
    """APCER per attack and BPCER, passive (model and adaptors) and active (verifier).

    Returns:
        {'passive': rows, 'active': rows, 'threshold', 'verifier'}.
    """
    threshold = source_threshold(model, model.config)
    attempts = build_attempts(model, settings)
    verifier = calibrate_verifier(settings)
    features = {kind: embed(model, np.stack(frames)) for kind, frames in attempts.frames.items()}
    passive = [_rate_row(name, kind, scorer(kind_features).numpy() >= threshold)
               for name, scorer in passive_scorers(model, adaptors, settings).items()
               for kind, kind_features in features.items()]
    active = [_rate_row("challenge-response verifier", kind, np.array([verifier.accepts(f, c) for f, c in sessions]))
              for kind, sessions in attempts.sessions.items()]
    return {"passive": passive, "active": active, "threshold": threshold, "verifier": verifier.__dict__}


def _rate_row(detector: str, kind: str, accepted: np.ndarray) -> dict:
    """APCER for an attack (share accepted), BPCER for live (share rejected)."""
    share = float(np.mean(accepted))
    return {"detector": detector, "attack": kind, "attempts": int(len(accepted)),
            "metric": "BPCER" if kind == "live" else "APCER", "rate": 1 - share if kind == "live" else share}
