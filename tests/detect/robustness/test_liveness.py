import numpy as np
import pytest

from effigy.detect.robustness.harness import HarnessSettings, run_harness
from effigy.detect.robustness.liveness import (
    CURVED,
    FLAT,
    REFLECTION,
    Verifier,
    live_session,
    random_challenge,
    session,
)
from effigy.errors import AdaptationError
from effigy.worlds.faces import live_face, real_faces
from tests.detect import tiny_fas


def _live(seed: int):
    rng = np.random.default_rng(seed)
    challenge = random_challenge(rng)
    return live_session(real_faces()[seed], seed, challenge, "phone", rng), challenge


def test_a_challenge_never_repeats_a_colour_twice_in_a_row():
    challenge = random_challenge(np.random.default_rng(0), 50)
    assert challenge.shape == (50, 3)
    assert not (challenge[1:] == challenge[:-1]).all(axis=1).any()


def test_live_sessions_pass_and_streams_that_ignore_the_challenge_fail():
    verifier = Verifier.calibrate([_live(i) for i in range(10)], np.random.default_rng(1))
    frames, challenge = _live(20)
    assert verifier.accepts(frames, challenge)
    assert not verifier.accepts(frames, random_challenge(np.random.default_rng(5)))  # a replay of another session
    static = np.repeat(frames[:1], len(frames), axis=0)
    assert not verifier.accepts(static, challenge)  # an injected still image reflects nothing


def test_a_flat_reflector_fails_the_shape_test_that_a_curved_face_passes():
    rng = np.random.default_rng(3)
    challenge = random_challenge(rng)
    base = live_face(real_faces()[3], 3, rng)
    curved = session(base, challenge, CURVED, REFLECTION, "phone", rng)
    flat = session(base, challenge, FLAT, REFLECTION, "phone", rng)
    assert Verifier.measures(curved, challenge)[2] > 1.5 > Verifier.measures(flat, challenge)[2]
    assert Verifier.measures(flat, challenge)[0] > 0.9  # the timing is right: only the shape gives it away


def test_a_weak_reflector_fails_the_strength_test():
    verifier = Verifier.calibrate([_live(i) for i in range(10)], np.random.default_rng(1))
    rng = np.random.default_rng(4)
    challenge = random_challenge(rng)
    glossy = session(live_face(real_faces()[4], 4, rng), challenge, CURVED, 0.2 * REFLECTION, "phone", rng)
    correlation, strength, _ = Verifier.measures(glossy, challenge)
    assert correlation >= verifier.min_correlation and strength < verifier.min_strength
    assert not verifier.accepts(glossy, challenge)


def test_calibration_needs_live_sessions():
    with pytest.raises(AdaptationError, match="live sessions"):
        Verifier.calibrate([], np.random.default_rng(0))


def test_the_harness_reports_every_attack_for_every_detector():
    from effigy.detect.fas.adapt import NoAdaptation

    model = tiny_fas()
    result = run_harness(model, [NoAdaptation()], HarnessSettings(domains=("phone",), attack_steps=2))
    kinds = {"live", "print", "replay", "mask", "face swap", "digital replay", "pgd", "apgd-ce"}
    assert {r["attack"] for r in result["passive"]} == kinds == {r["attack"] for r in result["active"]}
    active = {r["attack"]: r["rate"] for r in result["active"]}
    assert active["live"] <= 0.1 and active["digital replay"] <= 0.1 and active["pgd"] == 0
    assert all(r["attempts"] == 25 for r in result["active"])
