import numpy as np
import pytest
import torch

from effigy.models.lidar.centerpoint import CenterPoint, to_bev, voxelize
from effigy.models.lidar.targets import build_targets, decode, detection_loss, gaussian_radius
from effigy.models.lidar.train import augment, evaluate_detections, train
from effigy.worlds.lidar import Frame, simulate_frame
from tests.lidar import TINY


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    return [simulate_frame(s) for s in (0, 1)]


def test_voxels_hold_the_mean_point_of_their_cell():
    points = torch.tensor([[1.05, 0.05, -2.9, 0.2], [1.15, 0.15, -2.75, 0.4], [5.0, 1.0, 0.0, 1.0], [50.0, 0, 0, 0]])
    voxels = voxelize([points], TINY)
    assert len(voxels.indices) == 2  # the first two share a voxel; the last is out of range
    first = voxels.indices.tolist().index([0, 0, 32, 5])
    assert voxels.features[first, 3].item() == pytest.approx(0.3)
    assert voxels.features[first, 4].item() == pytest.approx(np.log(3))


def test_folding_height_into_channels_keeps_every_voxels_features(frames):
    voxels = voxelize([torch.from_numpy(frames[0].points)], TINY)
    bev = to_bev(voxels)
    assert bev.features.shape[1] == voxels.features.shape[1] * TINY.grid[0]
    torch.testing.assert_close(bev.features.sum(), voxels.features.sum())


def test_targets_peak_at_box_centres_and_decode_back_to_the_boxes():
    box = np.array([[6.2, 1.0, -1.0, 3.9, 1.6, 1.5, 0.3]])
    targets = build_targets([box], [["Car"]], TINY)
    assert targets["heatmap"][0, 0].max() == 1 and targets["mask"].sum() == 1
    logits = torch.where(targets["heatmap"] == 1, 10.0, -10.0)
    decoded = decode({"heatmap": logits, "regression": targets["regression"]}, TINY)[0]
    boxes, scores = decoded["Car"]
    np.testing.assert_allclose(boxes[0], box[0], atol=1e-5)
    assert len(decoded["Pedestrian"][0]) == 0
    assert gaussian_radius(10, 4) > 0


def test_perfect_outputs_have_a_lower_loss_than_wrong_ones():
    box = np.array([[6.2, 1.0, -1.0, 3.9, 1.6, 1.5, 0.3]])
    targets = build_targets([box], [["Car"]], TINY)
    perfect = {"heatmap": torch.logit(targets["heatmap"].clamp(1e-4, 1 - 1e-4)), "regression": targets["regression"]}
    wrong = {"heatmap": torch.zeros_like(targets["heatmap"]), "regression": targets["regression"] + 1}
    assert detection_loss(perfect, targets) < detection_loss(wrong, targets)


def test_augmentation_moves_points_and_boxes_together(frames):
    rng = np.random.default_rng(0)
    points, boxes = augment(frames[0], rng)
    from effigy.worlds.lidar import points_in_boxes
    before = points_in_boxes(frames[0].points, frames[0].boxes)
    after = points_in_boxes(points, boxes)
    assert np.abs(after - before).max() <= 2  # a point on a face may fall either side after rounding


def test_training_is_seeded_and_resumes_to_the_same_weights(frames, tmp_path):
    straight = train(TINY, frames=frames)
    interrupted = tmp_path / "state"

    def stop_after_first(step, loss):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(TINY, stop_after_first, interrupted, frames)
    resumed = train(TINY, frames=frames, checkpoint_dir=interrupted)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_ground_truth_detections_score_full_ap(frames):
    perfect = [{c: (f.boxes_of(c), np.ones(len(f.boxes_of(c)))) for c in TINY.classes} for f in frames]
    result = evaluate_detections(perfect, frames, TINY.classes)
    assert result["iou"]["Car"] == pytest.approx(1.0) and result["distance"]["mAP"] == pytest.approx(1.0)
    empty = [{c: (np.zeros((0, 7)), np.zeros(0)) for c in TINY.classes} for _ in frames]
    assert evaluate_detections(empty, frames, TINY.classes)["iou"]["mAP"] == 0.0


def test_the_detector_outputs_maps_of_the_bev_grid(frames):
    model = CenterPoint(TINY).eval()
    out = model([torch.from_numpy(f.points) for f in frames])
    assert out["heatmap"].shape == (2, 3, *TINY.bev_shape) and out["regression"].shape == (2, 8, *TINY.bev_shape)
