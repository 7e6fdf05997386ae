import numpy as np
import pytest
import torch

from effigy.detect.robustness.attacks import TwoLogits, adversarial, digital_replay, face_swap, inject
from effigy.errors import AdaptationError
from effigy.worlds.faces import live_face, real_faces, render_capture
from tests.detect import tiny_fas


@pytest.fixture(scope="module")
def tiny_model():
    return tiny_fas()


@pytest.mark.parametrize("method", ["pgd", "apgd-ce"])
def test_adversarial_noise_stays_inside_its_budget_and_raises_the_live_score(tiny_model, method):
    images = np.stack([render_capture(real_faces()[i], i, "print", "phone", 0) for i in range(6)])
    epsilon = 4 / 255
    with torch.no_grad():
        caught = TwoLogits(tiny_model)(torch.from_numpy(images)).argmax(dim=1).eq(0).numpy()
    perturbed = adversarial(tiny_model, images, method, epsilon, steps=5)
    assert perturbed.shape == images.shape and perturbed.min() >= 0 and perturbed.max() <= 1
    assert np.abs(perturbed - images).max() <= epsilon + 1e-6
    moved = np.abs(perturbed - images).reshape(len(images), -1).max(axis=1) > 0
    with torch.no_grad():
        before, after = tiny_model(torch.from_numpy(images)), tiny_model(torch.from_numpy(perturbed))
        fooled = TwoLogits(tiny_model)(torch.from_numpy(perturbed)).argmax(dim=1).eq(1).numpy()
    if method == "pgd":  # PGD moves every image towards live
        assert moved.all() and after.mean() > before.mean()
    else:  # APGD keeps a perturbation only where it fooled the model, and leaves the rest as they were
        assert (moved == (fooled & caught)).all()


def test_bad_attack_settings_are_refused(tiny_model):
    images = np.zeros((1, 3, 64, 64), np.float32)
    with pytest.raises(AdaptationError, match="pgd"):
        adversarial(tiny_model, images, "cw")
    with pytest.raises(AdaptationError, match="budget"):
        adversarial(tiny_model, images, "pgd", epsilon=0)


def test_face_swap_replaces_the_inner_face_and_keeps_the_rest():
    faces = real_faces()
    rng_state = np.random.default_rng(0)
    swapped = face_swap(faces[0], faces[1], 0, np.random.default_rng(0))
    host = live_face(faces[0], 0, rng_state)
    assert np.abs(swapped[:, :4, :4] - host[:, :4, :4]).max() < 0.02  # the corners stay the host's
    assert np.abs(swapped[:, 24:40, 24:40] - host[:, 24:40, 24:40]).mean() > 0.03  # the middle is the donor's


def test_injection_and_digital_replay_change_little_but_something():
    image = render_capture(real_faces()[2], 2, "live", "phone", 0)
    for changed in (inject(image), digital_replay(image, np.random.default_rng(0))):
        assert changed.shape == image.shape
        assert 0 < np.abs(changed - image).mean() < 0.05
