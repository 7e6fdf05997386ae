import numpy as np
import pytest

from effigy.errors import WorldError
from effigy.worlds.lidar import (
    LidarSpec,
    Scene,
    cast,
    lidar_frames,
    points_in_boxes,
    ray_box_hits,
    ray_plane_hits,
    simulate_frame,
)


def test_a_ray_along_x_enters_an_axis_aligned_box_at_its_near_face():
    box = np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    t, t_exit = ray_box_hits(np.zeros(3), np.array([[1.0, 0.0, 0.0]]), box)
    assert t[0, 0] == pytest.approx(9.0) and t_exit[0, 0] == pytest.approx(11.0)


def test_a_box_turned_45_degrees_is_hit_at_its_corner():
    box = np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, np.pi / 4]])
    t, _ = ray_box_hits(np.zeros(3), np.array([[1.0, 0.0, 0.0]]), box)
    assert t[0, 0] == pytest.approx(10.0 - np.sqrt(2.0))


def test_rays_that_pass_beside_or_point_away_miss():
    box = np.array([[10.0, 0.0, 0.0, 2.0, 2.0, 2.0, 0.0]])
    rays = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [np.cos(0.2), np.sin(0.2), 0.0]])
    t, _ = ray_box_hits(np.zeros(3), rays, box)
    assert np.isinf(t).all()


def test_a_downward_ray_meets_the_ground_plane_where_the_geometry_says():
    direction = np.array([[np.cos(-0.3), 0.0, np.sin(-0.3)]])
    t = ray_plane_hits(np.zeros(3), direction, (-1.73, 0.0, 0.0))
    assert t[0] == pytest.approx(1.73 / np.sin(0.3))


def test_a_box_in_front_of_another_hides_it():
    near = np.array([10.0, 0.0, -0.5, 2.0, 4.0, 3.0, 0.0])
    far = np.array([20.0, 0.0, -0.5, 2.0, 2.0, 2.0, 0.0])
    scene = Scene((-1.73, 0.0, 0.0), solids=[(near, "Car"), (far, "Car")])
    spec = LidarSpec(azimuth_deg=(-3.0, 3.0), elevation_deg=(-2.0, 1.0), beams=4, range_noise=0.0, dropout=0.0)
    points = cast(scene, spec, np.random.default_rng(0))
    counts = points_in_boxes(points, np.stack([near + [0.01, 0, 0, 0.05, 0.05, 0.05, 0], far]))
    assert counts[0] > 0 and counts[1] == 0


def test_frames_are_fixed_by_their_seed_and_splits_differ():
    a, b = simulate_frame(7), simulate_frame(7)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.boxes, b.boxes)
    train, val = lidar_frames("train", 1), lidar_frames("val", 1)
    assert not np.array_equal(train[0].boxes, val[0].boxes)


def test_a_frame_has_objects_of_every_class_with_points_on_them():
    frame = simulate_frame(3)
    assert set(frame.labels) == {"Car", "Pedestrian", "Cyclist"}
    assert frame.points.dtype == np.float32 and frame.points.shape[1] == 4
    assert (points_in_boxes(frame.points, frame.boxes) > 0).mean() > 0.5
    assert 0 <= frame.points[:, 3].min() and frame.points[:, 3].max() <= 1


def test_an_unknown_split_is_refused():
    with pytest.raises(WorldError, match="unknown lidar split"):
        lidar_frames("dev", 1)
