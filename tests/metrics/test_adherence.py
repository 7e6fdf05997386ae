from dataclasses import replace

from effigy.metrics.adherence import adherence
from effigy.worlds.shapes import ShapesWorld


def test_ground_truth_objects_score_one_for_every_kind():
    world = ShapesWorld(seed=5)
    for kind in ("single", "relation", "count"):
        for scene in world.sample(30, kind):
            result = adherence(scene, scene.objects)
            assert result.score == 1.0, (scene.caption, result.facts)


def test_each_wrong_fact_costs_its_share():
    scene = ShapesWorld(seed=1).sample_scene("single")
    obj = scene.objects[0]
    other_colour = next(c for c in ("red", "green", "blue", "yellow") if c != obj.colour)
    assert adherence(scene, [replace(obj, colour=other_colour)]).facts["colour"] is False
    assert adherence(scene, [replace(obj, colour=other_colour)]).score == 0.5  # shape and count still right
    assert adherence(scene, []).score == 0.0
    assert adherence(scene, [obj, obj]).score == 0.75  # an extra object breaks only the count


def test_swapped_relation_fails_only_the_relation():
    scene = ShapesWorld(seed=2).sample_scene("relation")
    a, b = scene.objects
    swapped = [replace(a, x=b.x, y=b.y), replace(b, x=a.x, y=a.y)]
    result = adherence(scene, swapped)
    assert result.facts == {"first object": True, "second object": True, "relation": False, "count": True}


def test_count_needs_the_exact_number():
    scene = ShapesWorld(seed=3).sample_scene("count")
    assert adherence(scene, scene.objects[:1]).facts["count"] is False
    assert adherence(scene, scene.objects).facts["count"] is True
