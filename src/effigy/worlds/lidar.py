"""A seeded lidar world for 3D detection that runs offline: street scenes ray-cast by a spinning lidar.

No lidar data installs from a package registry, so Ada3D's detector is trained and measured on simulated
frames. A scene is a sloped ground plane with kerbs, cars, pedestrians and cyclists as oriented boxes (sizes
around KITTI's class means, the ones OpenPCDet's anchors use), and clutter: walls, poles and porous
vegetation that returns scattered points. A 32-beam lidar at 1.73 m (KITTI's mounting height) casts one ray per
(beam, azimuth step): the nearest surface wins (occlusion), ranges get Gaussian noise, some returns drop out,
intensity falls with the incidence angle and depends on the material.

Coordinates are KITTI's lidar frame: x forward, y left, z up, metres; a box is (x, y, z, l, w, h, yaw) with
(x, y, z) its centre and yaw about z from the x axis. ``export_kitti`` / ``import_kitti`` read and write the
KITTI object layout, so a user's real KITTI data goes through the same code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from effigy.errors import WorldError

CLASSES = ("Car", "Pedestrian", "Cyclist")
# (mean l, w, h), (std l, w, h) in metres: KITTI's class means (OpenPCDet's anchor sizes), spread a little
SIZE_STATS = {"Car": ((3.9, 1.6, 1.56), (0.35, 0.1, 0.12)),
              "Pedestrian": ((0.8, 0.6, 1.73), (0.15, 0.1, 0.1)),
              "Cyclist": ((1.76, 0.6, 1.73), (0.15, 0.08, 0.1))}
REFLECTIVITY = {"ground": 0.25, "kerb": 0.35, "Car": 0.6, "Pedestrian": 0.35, "Cyclist": 0.45,
                "wall": 0.5, "pole": 0.7, "vegetation": 0.2}
SENSOR_HEIGHT = 1.73
SPLIT_SEEDS = {"train": 0, "val": 1_000_000, "test": 2_000_000}  # frame i of a split uses seed offset + i
NO_HIT = np.inf


@dataclass(frozen=True)
class LidarSpec:
    """The sensor: ``beams`` elevation angles evenly in ``elevation_deg``, one ray per ``azimuth_step_deg``
    over ``azimuth_deg`` (0 = straight ahead, positive to the left)."""

    beams: int = 32
    elevation_deg: tuple[float, float] = (-24.0, 2.0)
    azimuth_deg: tuple[float, float] = (-60.0, 60.0)
    azimuth_step_deg: float = 0.2
    max_range: float = 70.0
    range_noise: float = 0.02
    dropout: float = 0.05

    def directions(self) -> np.ndarray:
        """[rays, 3] unit ray directions, beam-major."""
        elevation = np.deg2rad(np.linspace(*self.elevation_deg, self.beams))
        low, high = self.azimuth_deg
        azimuth = np.deg2rad(np.arange(low, high, self.azimuth_step_deg))
        e, a = np.meshgrid(elevation, azimuth, indexing="ij")
        return np.stack([np.cos(e) * np.cos(a), np.cos(e) * np.sin(a), np.sin(e)], axis=-1).reshape(-1, 3)


@dataclass
class Frame:
    """One lidar sweep: ``points`` [N, 4] (x, y, z, intensity) float32, ``boxes`` [M, 7] ground truth,
    ``labels`` their class names."""

    points: np.ndarray
    boxes: np.ndarray
    labels: list[str]
    frame_id: str = ""

    def boxes_of(self, cls: str) -> np.ndarray:
        return self.boxes[[i for i, label in enumerate(self.labels) if label == cls]].reshape(-1, 7)


@dataclass
class Scene:
    """What a frame is cast against: the ground, solid boxes with a material each, porous boxes, and which
    solid boxes are the labelled objects."""

    ground: tuple[float, float, float]  # z = a + b x + c y
    solids: list[tuple[np.ndarray, str]] = field(default_factory=list)
    porous: list[np.ndarray] = field(default_factory=list)

    def ground_z(self, x: float, y: float) -> float:
        a, b, c = self.ground
        return a + b * x + c * y

    @property
    def objects(self) -> tuple[np.ndarray, list[str]]:
        labelled = [(box, kind) for box, kind in self.solids if kind in CLASSES]
        return (np.array([b for b, _ in labelled]).reshape(-1, 7), [k for _, k in labelled])


def ray_box_hits(origin: np.ndarray, directions: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slab test of every ray against every oriented box.

    Args:
        origin: [3] the common ray origin.
        directions: [R, 3] unit directions.
        boxes: [B, 7] boxes (x, y, z, l, w, h, yaw).
    Returns:
        ``t`` [R, B]: distance to the entry point (``inf`` where the ray misses or starts inside), and
        ``t_exit`` [R, B] (``inf`` on a miss).
    """
    if len(boxes) == 0:
        empty = np.full((len(directions), 0), NO_HIT)
        return empty, empty
    cos, sin = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    rel = origin[None, :] - boxes[:, :3]  # [B, 3]
    # rotate into each box's frame by -yaw: x' = cos x + sin y, y' = -sin x + cos y
    p = np.stack([cos * rel[:, 0] + sin * rel[:, 1], -sin * rel[:, 0] + cos * rel[:, 1], rel[:, 2]], axis=-1)
    dx, dy, dz = directions[:, 0:1], directions[:, 1:2], directions[:, 2:3]
    d = np.stack([cos * dx + sin * dy, -sin * dx + cos * dy, np.broadcast_to(dz, (len(directions), len(boxes)))],
                 axis=-1)  # [R, B, 3]
    d = np.where(np.abs(d) < 1e-12, 1e-12, d)
    half = boxes[:, 3:6] / 2
    t1, t2 = (-half - p) / d, (half - p) / d
    near, far = np.minimum(t1, t2).max(axis=-1), np.maximum(t1, t2).min(axis=-1)
    hit = (near <= far) & (near > 0)
    return np.where(hit, near, NO_HIT), np.where(hit, far, NO_HIT)


def ray_plane_hits(origin: np.ndarray, directions: np.ndarray, ground: tuple[float, float, float]) -> np.ndarray:
    """[R] distance along each ray to the plane z = a + b x + c y (``inf`` if it never gets there)."""
    a, b, c = ground
    normal = np.array([-b, -c, 1.0])
    denominator = directions @ normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (a - origin @ normal) / denominator
    return np.where((t > 0) & np.isfinite(t), t, NO_HIT)


def _box_normals(origin: np.ndarray, directions: np.ndarray, boxes: np.ndarray, t: np.ndarray,
                 which: np.ndarray) -> np.ndarray:
    """Unit normal of the face each ray enters (for the intensity's incidence term)."""
    box = boxes[which]
    point = origin + directions * t[:, None] - box[:, :3]
    cos, sin = np.cos(box[:, 6]), np.sin(box[:, 6])
    local = np.stack([cos * point[:, 0] + sin * point[:, 1], -sin * point[:, 0] + cos * point[:, 1], point[:, 2]], -1)
    axis = np.abs(local / (box[:, 3:6] / 2)).argmax(axis=1)
    sign = np.sign(local[np.arange(len(local)), axis])
    normal_local = np.zeros_like(local)
    normal_local[np.arange(len(local)), axis] = sign
    return np.stack([cos * normal_local[:, 0] - sin * normal_local[:, 1],
                     sin * normal_local[:, 0] + cos * normal_local[:, 1], normal_local[:, 2]], -1)


def cast(scene: Scene, spec: LidarSpec, rng: np.random.Generator) -> np.ndarray:
    """Ray-cast ``scene``: [N, 4] float32 points (x, y, z, intensity) in the lidar frame."""
    origin = np.zeros(3)
    directions = spec.directions()
    materials = ["ground"] + [kind for _, kind in scene.solids] + ["vegetation"]
    candidates = [ray_plane_hits(origin, directions, scene.ground)[:, None]]
    solids = np.array([box for box, _ in scene.solids]).reshape(-1, 7)
    solid_t, _ = ray_box_hits(origin, directions, solids)
    candidates.append(solid_t)
    candidates.append(_porous_hits(origin, directions, np.array(scene.porous).reshape(-1, 7), rng)[:, None])
    all_t = np.concatenate(candidates, axis=1)
    nearest = all_t.argmin(axis=1)
    t = all_t[np.arange(len(all_t)), nearest]
    keep = (t < spec.max_range) & (rng.random(len(t)) >= spec.dropout)
    t, nearest, rays = t[keep], nearest[keep], directions[keep]
    cos_incidence = _incidence(origin, rays, t, nearest, scene, solids)
    reflectivity = np.array([REFLECTIVITY[materials[i]] for i in nearest]) if len(nearest) else np.zeros(0)
    intensity = np.clip(reflectivity * (0.3 + 0.7 * cos_incidence) + rng.normal(0, 0.02, len(t)), 0, 1)
    t = t + rng.normal(0, spec.range_noise, len(t))
    xyz = rays * t[:, None]
    return np.concatenate([xyz, intensity[:, None]], axis=1).astype(np.float32)


def _incidence(origin, rays, t, nearest, scene: Scene, solids: np.ndarray) -> np.ndarray:
    """|cos| of the angle between each ray and the surface it hit (vegetation scatters: 0.5)."""
    out = np.full(len(t), 0.5)
    on_ground = nearest == 0
    _, b, c = scene.ground
    plane_normal = np.array([-b, -c, 1.0]) / np.linalg.norm([-b, -c, 1.0])
    out[on_ground] = np.abs(rays[on_ground] @ plane_normal)
    on_box = (nearest >= 1) & (nearest <= len(solids))
    if on_box.any():
        normals = _box_normals(origin, rays[on_box], solids, t[on_box], nearest[on_box] - 1)
        out[on_box] = np.abs((rays[on_box] * normals).sum(axis=1))
    return out


def _porous_hits(origin: np.ndarray, directions: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
                 density: float = 0.35) -> np.ndarray:
    """Vegetation: a ray crossing a porous box returns from a random depth inside it with probability
    ``density`` per box, else passes through."""
    near, far = ray_box_hits(origin, directions, boxes)
    if near.shape[1] == 0:
        return np.full(len(directions), NO_HIT)
    inside = np.isfinite(near)
    depth = np.where(inside, near, 0) + rng.random(near.shape) * (np.where(inside, far, 0) - np.where(inside, near, 0))
    returned = inside & (rng.random(near.shape) < density)
    return np.where(returned, depth, NO_HIT).min(axis=1)


@dataclass(frozen=True)
class SceneSpec:
    """How scenes are drawn: object counts per class, the area they are placed in, clutter counts."""

    cars: tuple[int, int] = (4, 10)
    pedestrians: tuple[int, int] = (2, 7)
    cyclists: tuple[int, int] = (1, 4)
    x_range: tuple[float, float] = (3.0, 40.0)
    y_range: tuple[float, float] = (-20.0, 20.0)
    road_half_width: tuple[float, float] = (4.0, 7.5)
    walls: tuple[int, int] = (1, 4)
    poles: tuple[int, int] = (3, 10)
    vegetation: tuple[int, int] = (2, 6)


def draw_scene(rng: np.random.Generator, spec: SceneSpec = SceneSpec()) -> Scene:
    """One street: the ground, kerbs, objects that do not overlap, and clutter beside the road."""
    ground = (-SENSOR_HEIGHT + rng.uniform(-0.1, 0.1), rng.uniform(-0.015, 0.015), rng.uniform(-0.015, 0.015))
    scene = Scene(ground)
    road = rng.uniform(*spec.road_half_width)
    scene.solids += _kerbs(scene, road, spec)
    placed: list[np.ndarray] = []
    for cls, count in (("Car", spec.cars), ("Cyclist", spec.cyclists), ("Pedestrian", spec.pedestrians)):
        for _ in range(rng.integers(count[0], count[1] + 1)):
            box = _place_object(rng, scene, cls, road, spec, placed)
            if box is not None:
                placed.append(box)
                scene.solids.append((box, cls))
    scene.solids += _clutter(rng, scene, road, spec, placed)
    scene.porous += [_vegetation(rng, scene, road, spec) for _ in range(rng.integers(*spec.vegetation) + 1)]
    return scene


def _kerbs(scene: Scene, road: float, spec: SceneSpec, segment: float = 5.0) -> list[tuple[np.ndarray, str]]:
    """Kerbs along both road edges, in segments that follow the sloped ground."""
    kerbs = []
    for side in (-1, 1):
        for x in np.arange(0.0, spec.x_range[1] + segment, segment):
            cx, cy = x + segment / 2, side * road
            kerbs.append((np.array([cx, cy, scene.ground_z(cx, cy) + 0.075, segment, 0.3, 0.15, 0.0]), "kerb"))
    return kerbs


def _place_object(rng: np.random.Generator, scene: Scene, cls: str, road: float, spec: SceneSpec,
                  placed: list[np.ndarray], tries: int = 20) -> np.ndarray | None:
    mean, std = SIZE_STATS[cls]
    length, w, h = np.maximum(rng.normal(mean, std), 0.3)
    for _ in range(tries):
        x = rng.uniform(*spec.x_range)
        if cls == "Car":
            y = rng.uniform(-road + w, road - w)
            yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.15) if rng.random() < 0.8 else rng.uniform(-np.pi, np.pi)
        elif cls == "Cyclist":
            y = rng.choice([-1, 1]) * rng.uniform(road - 2.0, road - 0.5)
            yaw = rng.choice([0.0, np.pi]) + rng.normal(0, 0.2)
        else:
            y = rng.choice([-1, 1]) * rng.uniform(road + 0.5, road + 4.0)
            yaw = rng.uniform(-np.pi, np.pi)
        if not spec.y_range[0] <= y <= spec.y_range[1]:
            continue
        box = np.array([x, y, scene.ground_z(x, y) + h / 2, length, w, h, wrap_angle(yaw)])
        if all(np.hypot(*(box[:2] - other[:2])) > (np.hypot(length, w) + np.hypot(*other[3:5])) / 2 + 0.3 for other in placed):
            return box
    return None


def _clutter(rng: np.random.Generator, scene: Scene, road: float, spec: SceneSpec,
             placed: list[np.ndarray]) -> list[tuple[np.ndarray, str]]:
    """Walls beyond the pavement and poles on it, clear of the objects."""
    out = []
    for _ in range(rng.integers(spec.walls[0], spec.walls[1] + 1)):
        length, y = rng.uniform(5, 20), rng.choice([-1, 1]) * rng.uniform(road + 5.0, road + 9.0)
        x, height = rng.uniform(0, spec.x_range[1]), rng.uniform(1.5, 4.0)
        out.append((np.array([x, y, scene.ground_z(x, y) + height / 2, length, 0.4, height,
                              rng.normal(0, 0.05)]), "wall"))
    for _ in range(rng.integers(spec.poles[0], spec.poles[1] + 1)):
        x, y = rng.uniform(*spec.x_range), rng.choice([-1, 1]) * (road + rng.uniform(0.3, 0.6))
        if all(np.hypot(x - b[0], y - b[1]) > np.hypot(*b[3:5]) / 2 + 0.5 for b in placed):
            out.append((np.array([x, y, scene.ground_z(x, y) + 2.0, 0.2, 0.2, 4.0, 0.0]), "pole"))
    return out


def _vegetation(rng: np.random.Generator, scene: Scene, road: float, spec: SceneSpec) -> np.ndarray:
    x, y = rng.uniform(*spec.x_range), rng.choice([-1, 1]) * rng.uniform(road + 4.5, road + 10.0)
    length, w, h = rng.uniform(1.5, 5.0), rng.uniform(1.0, 3.0), rng.uniform(1.0, 3.0)
    return np.array([x, y, scene.ground_z(x, y) + h / 2, length, w, h, rng.uniform(-np.pi, np.pi)])


def wrap_angle(angle: float) -> float:
    """``angle`` in [-pi, pi)."""
    return float((angle + np.pi) % (2 * np.pi) - np.pi)


def simulate_frame(seed: int, lidar: LidarSpec = LidarSpec(), scene_spec: SceneSpec = SceneSpec(),
                   frame_id: str = "") -> Frame:
    """The frame of ``seed``: a scene drawn and cast with one generator, so a seed fixes both."""
    rng = np.random.default_rng(seed)
    scene = draw_scene(rng, scene_spec)
    points = cast(scene, lidar, rng)
    boxes, labels = scene.objects
    return Frame(points, boxes, labels, frame_id or f"{seed:06d}")


def lidar_frames(split: str, count: int, lidar: LidarSpec = LidarSpec(), scene_spec: SceneSpec = SceneSpec()) -> list[Frame]:
    """``count`` frames of a split (train / val / test: disjoint seed ranges)."""
    if split not in SPLIT_SEEDS:
        raise WorldError(f"unknown lidar split {split!r}: choose one of {', '.join(SPLIT_SEEDS)}.")
    return [simulate_frame(SPLIT_SEEDS[split] + i, lidar, scene_spec, f"{split}_{i:06d}") for i in range(count)]


def points_in_boxes(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """[M] number of ``points`` inside each box (for ignoring unobservable ground truth)."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=int)
    rel = points[None, :, :3] - boxes[:, None, :3]
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    local_x, local_y = cos * rel[..., 0] + sin * rel[..., 1], -sin * rel[..., 0] + cos * rel[..., 1]
    inside = ((np.abs(local_x) <= boxes[:, 3:4] / 2) & (np.abs(local_y) <= boxes[:, 4:5] / 2)
              & (np.abs(rel[..., 2]) <= boxes[:, 5:6] / 2))
    return inside.sum(axis=1)
