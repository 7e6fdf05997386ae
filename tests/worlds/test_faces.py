import numpy as np
import pytest
from scipy import ndimage

from effigy.errors import WorldError
from effigy.worlds import faces
from effigy.worlds.faces import (
    DOMAINS,
    SIZE,
    capture,
    held_out_face,
    live_face,
    mask_attack,
    print_attack,
    real_faces,
    render,
    render_capture,
    replay_attack,
    split_identities,
)


def _live(seed: int = 0) -> np.ndarray:
    return live_face(real_faces()[0], 0, np.random.default_rng(seed))


def _detail(image: np.ndarray) -> float:
    """Energy of the fine detail (Laplacian) of the grey image."""
    return float(ndimage.laplace(image.mean(axis=0)).var())


def _correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = (a - a.mean(1, keepdims=True)) / a.std(1, keepdims=True)
    b = (b - b.mean(1, keepdims=True)) / b.std(1, keepdims=True)
    return a @ b.T / a.shape[1]


def test_real_faces_are_the_pinned_lfw_crops():
    crops = real_faces()
    assert crops.shape == (100, 25, 25) and crops.dtype == np.float32
    assert 0 <= crops.min() and crops.max() <= 1


def test_a_changed_data_file_is_refused(monkeypatch):
    real_faces.cache_clear()
    monkeypatch.setattr(faces, "LFW_SUBSET_SHA256", "0" * 64)
    try:
        with pytest.raises(WorldError, match="sha256"):
            real_faces()
    finally:
        real_faces.cache_clear()


def test_splits_are_disjoint_identities_with_no_near_copies_across_them():
    parts = {s: split_identities(s) for s in faces.SPLITS}
    assert sum(len(p) for p in parts.values()) == 100
    assert len(set(np.concatenate(list(parts.values())))) == 100
    flat = real_faces().reshape(100, -1)
    for a in parts:
        for b in parts:
            if a < b:
                assert _correlation(flat[parts[a]], flat[parts[b]]).max() < 0.9
    with pytest.raises(WorldError, match="split"):
        split_identities("validation")


def test_a_capture_is_the_same_for_the_same_seed_and_differs_for_another():
    face = real_faces()[5]
    first = render_capture(face, 5, "replay", "kiosk", 3)
    assert first.shape == (3, SIZE, SIZE) and first.dtype == np.float32
    np.testing.assert_array_equal(first, render_capture(face, 5, "replay", "kiosk", 3))
    assert np.abs(first - render_capture(face, 5, "replay", "kiosk", 4)).mean() > 0.01


def test_render_is_order_free_and_labels_its_rows():
    data = render("dev", ["phone", "webcam"], ["print"], live_per_identity=1, spoofs_per_attack=1)
    assert len(data) == 15 * 2 * 2
    assert set(data.kind) == {"live", "print"} and data.live.sum() == 30
    row = int(np.flatnonzero((data.kind == "print") & (data.domain == "webcam"))[3])
    identity = int(data.identity[row])
    np.testing.assert_array_equal(data.images[row], render_capture(real_faces()[identity], identity, "print",
                                                                   "webcam", 0))
    assert set(data.identity) == set(split_identities("dev"))


def test_unknown_names_are_refused():
    with pytest.raises(WorldError, match="attack"):
        render("dev", ["phone"], ["cutout"])
    with pytest.raises(WorldError, match="domain"):
        render_capture(real_faces()[0], 0, "live", "dslr", 0)
    with pytest.raises(WorldError, match="kind"):
        render_capture(real_faces()[0], 0, "deepfake", "phone", 0)
    with pytest.raises(WorldError, match="held-out"):
        held_out_face("lena")


def test_print_compresses_the_gamut_and_adds_a_dot_screen():
    live = _live()
    printed = print_attack(live, np.random.default_rng(1))
    assert np.percentile(printed, 99) - np.percentile(printed, 1) < np.percentile(live, 99) - np.percentile(live, 1)
    saturation = lambda image: float(image.std(axis=0).mean())
    assert saturation(printed) < saturation(live)
    assert printed.min() > 0.05  # paper is never black
    assert _detail(printed) > 2 * _detail(live)  # the halftone


def test_replay_adds_a_bezel_glare_and_screen_pattern():
    live = _live()
    replayed = replay_attack(live, np.random.default_rng(2))
    borders = [replayed[:, :2], replayed[:, -2:], replayed[:, :, :2], replayed[:, :, -2:]]
    assert any(b.max() <= 0.1 for b in borders)  # the dark bezel along one edge
    assert not any(b.max() <= 0.1 for b in [live[:, :2], live[:, -2:], live[:, :, :2], live[:, :, -2:]])
    assert _detail(replayed) > _detail(live)  # moire and banding


def test_mask_smooths_the_skin_and_drops_the_highlight():
    live = _live()
    masked = mask_attack(live, np.random.default_rng(3))
    centre = np.s_[:, 20:44, 20:44]  # inside the mask's edge
    assert _detail(masked[centre]) < 0.5 * _detail(live[centre])
    assert masked.max() < live.max()
    ring = np.s_[:, 30:34, 2:12]  # the rigid edge crosses the left cheek
    assert masked[ring].min() < 0.6 * live[ring].min()


def test_domains_differ_in_sharpness_and_colour():
    live = _live()
    phone = capture(live, DOMAINS["phone"], np.random.default_rng(0))
    laptop = capture(live, DOMAINS["laptop"], np.random.default_rng(0))
    assert _detail(laptop) < _detail(phone)  # lower resolution and more blur
    red_blue = lambda image: image[0].mean() / image[2].mean()
    assert red_blue(laptop) > red_blue(phone)  # laptop's white balance is warmer


def test_held_out_faces_are_found_and_are_not_lfw_crops():
    for name in ("astronaut", "grace_hopper"):
        crop = held_out_face(name)
        assert crop.shape == (25, 25) and 0 <= crop.min() and crop.max() <= 1 and crop.std() > 0.1
        assert _correlation(crop.reshape(1, -1), real_faces().reshape(100, -1)).max() < 0.9
