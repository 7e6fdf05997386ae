"""Photos in, faces found: a real photo given whole is searched for faces and each is framed like the crops the
models learned from; a photo without one gets no verdict; a crop stays a crop."""
import numpy as np
import pytest
from PIL import Image

from effigy.detect.faces import CROP_SIDE, find_faces
from effigy.worlds.faces import SIZE


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())  # 512 x 512, one frontal face in the upper middle


def no_face_photo() -> Image.Image:
    """A 480 x 360 picture of smooth colour fields: nothing a face cascade fires on."""
    rng = np.random.default_rng(0)
    from scipy import ndimage

    fields = ndimage.gaussian_filter(rng.random((360, 480, 3)), (30, 30, 0))
    fields = (fields - fields.min()) / (fields.max() - fields.min())
    return Image.fromarray((fields * 255).astype(np.uint8))


def test_a_photo_given_whole_has_its_face_found_framed_and_cut_in_colour(astronaut):
    faces = find_faces(astronaut)
    assert len(faces) == 1
    left, top, side = faces[0].box
    assert 100 < left + side / 2 < 320 and 20 < top + side / 2 < 220 and 60 < side < 300  # her face, not the suit
    assert faces[0].image.shape == (3, SIZE, SIZE) and faces[0].image.std(axis=0).mean() > 0.01  # colour kept


def test_a_photo_without_a_face_gets_none():
    assert find_faces(no_face_photo()) == []


def test_a_small_image_is_a_crop_and_crops_skip_the_search(astronaut):
    small = astronaut.resize((CROP_SIDE, CROP_SIDE))
    assert [f.box for f in find_faces(small)] == [None]
    whole = find_faces(no_face_photo(), crops=True)
    assert len(whole) == 1 and whole[0].box is None and whole[0].image.shape == (3, SIZE, SIZE)


def test_a_large_photo_is_searched_on_a_scaled_copy_and_boxes_come_back_in_its_pixels(astronaut):
    large = astronaut.resize((1600, 1600))
    faces = find_faces(large)
    assert len(faces) == 1
    scaled = np.array(find_faces(astronaut)[0].box) * 1600 / 512
    assert np.abs(np.array(faces[0].box) - scaled).max() < 0.1 * 1600
