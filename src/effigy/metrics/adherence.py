"""Prompt adherence for the shapes world: the fraction of a caption's facts that an image shows.

The facts of each scene kind:
  single    object present with the right colour, shape and size; exactly one object
  relation  first object present (colour + shape), second present, the relation holds; two objects
  count     the right number of objects of that colour and shape; no others
Objects read from the image (by the attribute checker) are matched to the caption's objects by
colour and shape. The per-fact results are kept, so a low score says what went wrong.
"""
from __future__ import annotations

from dataclasses import dataclass

from effigy.errors import WorldError
from effigy.worlds.shapes import Scene, ShapeObject, relation_holds


@dataclass
class Adherence:
    score: float
    facts: dict[str, bool]


def _find(objects: list[ShapeObject], wanted: ShapeObject, exclude: set[int] = frozenset()) -> int | None:
    for i, obj in enumerate(objects):
        if i not in exclude and obj.colour == wanted.colour and obj.shape == wanted.shape:
            return i
    return None


def adherence(scene: Scene, seen: list[ShapeObject]) -> Adherence:
    if scene.kind == "single":
        want = scene.objects[0]
        facts = {
            "colour": any(o.colour == want.colour for o in seen),
            "shape": any(o.shape == want.shape for o in seen),
            "size": any(o.colour == want.colour and o.shape == want.shape and o.size == want.size for o in seen),
            "count": len(seen) == 1,
        }
    elif scene.kind == "relation":
        first = _find(seen, scene.objects[0])
        second = _find(seen, scene.objects[1], {first} if first is not None else set())
        facts = {
            "first object": first is not None,
            "second object": second is not None,
            "relation": first is not None and second is not None
            and relation_holds(seen[first], seen[second], scene.relation, margin=0.0),
            "count": len(seen) == 2,
        }
    elif scene.kind == "count":
        want = scene.objects[0]
        matching = [o for o in seen if o.colour == want.colour and o.shape == want.shape]
        facts = {
            "colour": bool(seen) and all(o.colour == want.colour for o in seen),
            "shape": bool(seen) and all(o.shape == want.shape for o in seen),
            "count": len(matching) == len(scene.objects) == len(seen),
        }
    else:
        raise WorldError(f"unknown scene kind {scene.kind!r}: the checker knows the shapes world's kinds only.")
    return Adherence(sum(facts.values()) / len(facts), facts)
