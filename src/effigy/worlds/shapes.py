"""A procedural, seeded world of captioned images for text-to-image work that runs offline.

Each scene holds one to three objects (shape, colour, size, position) on a plain background and a
caption generated from them ("a small red circle left of a blue square", "two green triangles").
Every object's ground truth is kept, so an image can be checked attribute by attribute.

Some (colour, shape) pairs never appear in the training split: the ``heldout`` split uses only
those, to test composition rather than memory.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from effigy.errors import WorldError

SHAPES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 210, 40),
}
SIZES = {"small": 4.5, "large": 7.5}  # radius in pixels at 32x32
RELATIONS = ("left of", "right of", "above", "below")
BACKGROUND = (200, 200, 200)
HELDOUT_PAIRS = frozenset({("blue", "triangle"), ("yellow", "circle")})
KINDS = ("single", "relation", "count")
SUPERSAMPLE = 4


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    x: float  # centre, in pixels
    y: float

    @property
    def radius(self) -> float:
        return SIZES[self.size]


@dataclass
class Scene:
    kind: str
    objects: list[ShapeObject]
    relation: str | None = None
    caption: str = ""

    def to_dict(self) -> dict:
        return {"kind": self.kind, "relation": self.relation, "caption": self.caption,
                "objects": [asdict(o) for o in self.objects]}


def describe(obj: ShapeObject, article: bool = True) -> str:
    return f"{'a ' if article else ''}{obj.size} {obj.colour} {obj.shape}"


def caption_of(scene: Scene) -> str:
    """The caption follows from the scene: the one place captions are made."""
    if scene.kind == "single":
        return describe(scene.objects[0])
    if scene.kind == "relation":
        a, b = scene.objects
        return f"{describe(a)} {scene.relation} {describe(b)}"
    first = scene.objects[0]
    return f"{_number_word(len(scene.objects))} {first.colour} {first.shape}s"


def _number_word(n: int) -> str:
    return {2: "two", 3: "three"}[n]


def relation_holds(a: ShapeObject, b: ShapeObject, relation: str, margin: float = 2.0) -> bool:
    """Whether ``a`` is ``relation`` ``b`` by centre positions (with a margin, so it is visible)."""
    dx, dy = b.x - a.x, b.y - a.y
    return {
        "left of": dx > margin and abs(dx) > abs(dy),
        "right of": -dx > margin and abs(dx) > abs(dy),
        "above": dy > margin and abs(dy) > abs(dx),
        "below": -dy > margin and abs(dy) > abs(dx),
    }[relation]


@dataclass
class ShapesWorld:
    """Seeded scene sampler; ``split`` is 'train' (no held-out pairs) or 'heldout' (only those)."""

    size: int = 32
    seed: int = 0
    split: str = "train"
    kinds: tuple[str, ...] = KINDS
    rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.split not in ("train", "heldout"):
            raise WorldError(f"split={self.split!r}: choose 'train' or 'heldout'.")
        self.rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1])

    def _pair(self) -> tuple[str, str]:
        allowed = [(c, s) for c in COLOURS for s in SHAPES if ((c, s) in HELDOUT_PAIRS) == (self.split == "heldout")]
        return allowed[self.rng.integers(len(allowed))]

    def _object(self, colour: str, shape: str, size: str, box: tuple[float, float, float, float]) -> ShapeObject:
        r = SIZES[size]
        x0, x1, y0, y1 = box
        x = self.rng.uniform(max(x0, r + 1), min(x1, self.size - r - 1))
        y = self.rng.uniform(max(y0, r + 1), min(y1, self.size - r - 1))
        return ShapeObject(shape, colour, size, float(x), float(y))

    def _size(self) -> str:
        return ("small", "large")[self.rng.integers(2)]

    def sample_scene(self, kind: str | None = None) -> Scene:
        kind = kind or self.kinds[self.rng.integers(len(self.kinds))]
        n = self.size
        if kind == "single":
            colour, shape = self._pair()
            scene = Scene(kind, [self._object(colour, shape, self._size(), (0, n, 0, n))])
        elif kind == "relation":
            relation = RELATIONS[self.rng.integers(len(RELATIONS))]
            boxes = _relation_boxes(relation, n)
            (c1, s1), (c2, s2) = self._pair(), self._pair()
            objects = [self._object(c1, s1, "small", boxes[0]), self._object(c2, s2, "small", boxes[1])]
            scene = Scene(kind, objects, relation)
        elif kind == "count":
            colour, shape = self._pair()
            halves = _relation_boxes("left of", n)
            scene = Scene(kind, [self._object(colour, shape, "small", box) for box in halves])
        else:
            raise WorldError(f"kind={kind!r}: choose one of {', '.join(KINDS)}.")
        scene.caption = caption_of(scene)
        return scene

    def sample(self, count: int, kind: str | None = None) -> list[Scene]:
        return [self.sample_scene(kind) for _ in range(count)]


def _relation_boxes(relation: str, n: int) -> tuple[tuple, tuple]:
    """Regions (x0, x1, y0, y1) for two objects so that the relation holds clearly: centres at least
    0.3 n apart along the relation's axis and at most 0.25 n apart across it."""
    near, far, band = (0, n * 0.35), (n * 0.65, n), (n * 0.375, n * 0.625)
    first, second = (*near, *band), (*far, *band)
    if relation in ("above", "below"):
        first, second = (*band, *near), (*band, *far)
    return (first, second) if relation in ("left of", "above") else (second, first)


def render(scene: Scene, size: int = 32) -> np.ndarray:
    """Draw a scene as uint8 RGB [size, size, 3], anti-aliased by supersampling."""
    big = size * SUPERSAMPLE
    canvas = np.empty((big, big, 3), dtype=np.float32)
    canvas[:] = BACKGROUND
    ys, xs = np.mgrid[0:big, 0:big].astype(np.float32) / SUPERSAMPLE + 0.5 / SUPERSAMPLE
    for obj in scene.objects:
        canvas[_mask(obj, xs, ys)] = COLOURS[obj.colour]
    small = canvas.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE, 3).mean(axis=(1, 3))
    return np.round(small).astype(np.uint8)


def _mask(obj: ShapeObject, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    dx, dy, r = xs - obj.x, ys - obj.y, obj.radius
    if obj.shape == "circle":
        return dx**2 + dy**2 <= r**2
    if obj.shape == "square":
        half = r * 0.85
        return (np.abs(dx) <= half) & (np.abs(dy) <= half)
    # upward triangle inscribed in the circle of radius r
    top, bottom = -r, r * 0.6
    width_at = (dy - top) / (bottom - top) * r * 1.05
    return (dy >= top) & (dy <= bottom) & (np.abs(dx) <= width_at)
