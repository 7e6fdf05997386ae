import numpy as np
import pytest

from effigy.errors import WorldError
from effigy.worlds.shapes import (
    BACKGROUND,
    COLOURS,
    HELDOUT_PAIRS,
    ShapesWorld,
    caption_of,
    relation_holds,
    render,
)


def test_same_seed_same_scenes_and_pixels():
    a, b = ShapesWorld(seed=3).sample(20), ShapesWorld(seed=3).sample(20)
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert all(np.array_equal(render(x), render(y)) for x, y in zip(a, b))
    assert [s.caption for s in ShapesWorld(seed=4).sample(20)] != [s.caption for s in a]


def test_captions_follow_from_objects():
    for scene in ShapesWorld(seed=0).sample(300):
        assert scene.caption == caption_of(scene)
        words = scene.caption.split()
        for obj in scene.objects:
            assert obj.colour in words and (obj.shape in words or obj.shape + "s" in words)
        if scene.kind == "relation":
            assert relation_holds(*scene.objects, scene.relation)
        if scene.kind == "count":
            assert words[0] == "two" and len({(o.colour, o.shape) for o in scene.objects}) == 1


def test_heldout_pairs_never_appear_in_training_and_only_there_in_heldout():
    train_pairs = {(o.colour, o.shape) for s in ShapesWorld(seed=0).sample(500) for o in s.objects}
    held_pairs = {(o.colour, o.shape) for s in ShapesWorld(seed=0, split="heldout").sample(200) for o in s.objects}
    assert not train_pairs & HELDOUT_PAIRS
    assert held_pairs == set(HELDOUT_PAIRS)


def test_render_draws_each_object_in_its_colour_at_its_centre():
    for scene in ShapesWorld(seed=1).sample(50, kind="single") + ShapesWorld(seed=1).sample(50, kind="count"):
        image = render(scene)
        assert image.shape == (32, 32, 3) and tuple(image[0, 0]) == BACKGROUND
        for obj in scene.objects:
            centre = image[int(obj.y), int(obj.x)].astype(int)
            assert np.abs(centre - np.array(COLOURS[obj.colour])).max() < 40


def test_bad_split_and_kind():
    with pytest.raises(WorldError, match="split"):
        ShapesWorld(split="test")
    with pytest.raises(WorldError, match="kind"):
        ShapesWorld().sample_scene("five")
