import numpy as np
import pytest
from scipy import ndimage

from effigy.errors import WorldError
from effigy.worlds import deepfakes
from effigy.worlds.deepfakes import (
    FAMILIES,
    face_swap,
    forge,
    reenact,
    region_mask,
    render_forgeries,
    render_forgery,
    self_blend,
    synthetic_face,
    upsample_artifacts,
    visible_cues,
)
from effigy.worlds.faces import SIZE, posed_live_face, real_faces, split_identities


def _posed(seed: int = 0, identity: int = 3):
    rng = np.random.default_rng(seed)
    live, pose = posed_live_face(real_faces()[identity], identity, rng)
    return live, pose, rng


@pytest.mark.parametrize("make", [self_blend, reenact, upsample_artifacts,
                                  lambda live, pose, rng: face_swap(live, pose, real_faces()[9], 9, rng)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_each_family_changes_its_region_only(make, seed):
    live, pose, rng = _posed(seed)
    forgery = make(live, pose, rng)
    change = np.abs(forgery.image - live).max(axis=0)
    outside = forgery.mask == 0
    assert outside.any() and change[outside].max() < 1e-6  # untouched outside the support, up to float rounding
    assert change[forgery.mask >= 0.5 * forgery.mask.max()].mean() > 0.005  # and really changed inside it
    region = region_mask(forgery.region, pose, blur=3.0)
    assert (forgery.mask > 0)[region < 1e-3].mean() < 0.02  # the support lies in the named region


def test_regions_sit_where_the_aligned_faces_have_them():
    # eyes are darker than the cheeks below them, on the mean LFW crop brought to the world's size
    mean = ndimage.zoom(real_faces().mean(0), SIZE / 25, order=1)
    identity = (np.eye(2), np.zeros(2))
    eyes, face = region_mask("eyes", identity) > 0.5, region_mask("face", identity) > 0.5
    cheeks = np.roll(eyes, 9, axis=0) & face
    assert mean[eyes].mean() < mean[cheeks].mean()
    assert mean[face].mean() > mean[~face].mean()  # the face is brighter than hair and background


def test_reenactment_names_its_region_and_swap_its_donor():
    live, pose, rng = _posed(4)
    moved = reenact(live, pose, rng)
    assert moved.region in ("mouth", "eyes") and moved.region in moved.artifact
    swapped = face_swap(live, pose, real_faces()[9], 9, np.random.default_rng(0))
    assert swapped.donor == 9 and swapped.family == "swap"
    with pytest.raises(WorldError, match="donor"):
        forge("swap", live, pose, rng)
    with pytest.raises(WorldError, match="unknown forgery family"):
        forge("morph", live, pose, rng)


def test_render_is_deterministic_by_seed_and_order_free():
    a = render_forgeries("dev", domains=["phone"], seed=0)
    b = render_forgeries("dev", domains=["phone"], seed=0)
    c = render_forgeries("dev", domains=["phone"], seed=1)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)
    identities = [int(i) for i in split_identities("dev")]
    row = int(np.flatnonzero((a.family == "swap") & (a.identity == identities[2]))[0])
    alone, _ = render_forgery(identities[2], real_faces()[identities[2]], "swap", "phone", 0, 0, identities)
    np.testing.assert_array_equal(alone, a.images[row])


def test_a_synthetic_face_keeps_the_real_captures_pose_and_light_and_replaces_the_face():
    identity, keys = 3, [5, 1]
    live, _ = posed_live_face(real_faces()[identity], identity, np.random.default_rng(keys))
    same = synthetic_face(real_faces()[identity], identity, np.random.default_rng(keys))
    np.testing.assert_array_equal(same.image, live)  # the real crop through the same draws: the very live face
    other = synthetic_face(real_faces()[40], identity, np.random.default_rng(keys))
    assert other.family == "synthetic" and other.region == "face" and (other.mask == 1).all()
    assert np.abs(other.image - live).mean() > 0.02
    with pytest.raises(WorldError, match="render_forgery"):
        forge("synthetic", live, (np.eye(2), np.zeros(2)), np.random.default_rng(0))


def test_visible_cues_read_the_change_off_the_pixels():
    live, pose, _ = _posed(2)
    mask = region_mask("face", pose, blur=2.0)
    made = lambda image: deepfakes.Forgery(image.astype(np.float32), mask, "sbi", "face", "")  # noqa: E731
    blurred = ndimage.gaussian_filter(live, (0, 1.5, 1.5))
    assert visible_cues(live, made(live)) == "same texture, same colour, no seam"
    assert visible_cues(live, made(mask * blurred + (1 - mask) * live)).startswith("blurred, same colour")
    assert visible_cues(live, made(mask * (live + 0.1) + (1 - mask) * live)) == "same texture, brighter, visible seam"
    warm = live + mask * np.array([0.06, 0.0, -0.06])[:, None, None]
    assert visible_cues(live, made(warm)).split(", ")[1] == "warmer"


def test_rows_describe_the_forgeries_and_swaps_stay_in_the_split(quick_synthetic):
    data = render_forgeries("test", families=FAMILIES, domains=["webcam"], reals_per_identity=1)
    assert data.images.shape[1:] == (3, SIZE, SIZE) and 0 <= data.images.min() and data.images.max() <= 1
    assert set(data.family) == {"real", *FAMILIES}
    assert (data.fake == (data.family != "real")).all()
    assert (data.region[~data.fake] == "").all() and (data.region[data.fake] != "").all()
    assert (data.cues[~data.fake] == "").all() and all(len(c.split(", ")) == 3 for c in data.cues[data.fake])
    test_ids = set(split_identities("test").tolist())
    swaps = data.family == "swap"
    assert set(data.donor[swaps].tolist()) <= test_ids and (data.donor[swaps] != data.identity[swaps]).all()
    assert (data.donor[~swaps] == -1).all()


def test_fakes_pair_with_the_real_capture_they_forge():
    # a fake of (identity, domain, index) forges the face of the real capture with the same keys: SBI pairs
    data = render_forgeries("dev", families=["sbi", "reenact"], domains=["phone"], reals_per_identity=1)
    real = data.subset(~data.fake)
    flat = lambda x: (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)  # noqa: E731
    b = flat(real.images.mean(1).reshape(len(real), -1))
    for family in ("sbi", "reenact"):
        fake = data.subset(data.family == family)
        assert (real.identity == fake.identity).all()
        similarity = flat(fake.images.mean(1).reshape(len(fake), -1)) @ b.T
        assert (similarity.argmax(axis=1) == np.arange(len(fake))).all()


def test_bad_requests_say_what_to_use():
    with pytest.raises(WorldError, match="unknown forgery family"):
        render_forgery(0, real_faces()[0], "morph", "phone", 0, 0)
    with pytest.raises(WorldError, match="unknown capture domain"):
        render_forgery(0, real_faces()[0], "sbi", "cinema", 0, 0)
    with pytest.raises(WorldError, match="another identity"):
        render_forgery(0, real_faces()[0], "swap", "phone", 0, 0, donors=[0])
    with pytest.raises(WorldError, match="unknown face region"):
        region_mask("ears", (np.eye(2), np.zeros(2)))
