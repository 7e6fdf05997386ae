import numpy as np
import pytest

from effigy.errors import MetricError
from effigy.metrics.bev import FrameBoxes, average_precision, bev_map, centre_distance, rotated_bev_iou


def box(x, y, length=4.0, w=2.0, yaw=0.0):
    return [x, y, 0.0, length, w, 1.5, yaw]


def test_rotated_iou_of_known_overlaps():
    a = np.array([box(0, 0)])
    assert rotated_bev_iou(a, a)[0, 0] == pytest.approx(1.0)
    assert rotated_bev_iou(a, np.array([box(2, 0)]))[0, 0] == pytest.approx(4 / 12)  # half overlaps: 4 / (8+8-4)
    square = np.array([box(0, 0, 2, 2)])
    turned = np.array([box(0, 0, 2, 2, np.pi / 4)])
    overlap = 8 * (np.sqrt(2) - 1)  # a unit-half square and its 45-degree turn share a regular octagon
    assert rotated_bev_iou(square, turned)[0, 0] == pytest.approx(overlap / (8 - overlap))


def test_ap_of_hand_made_detections_equals_the_hand_computed_value():
    truths = [FrameBoxes(np.array([box(0, 0), box(10, 0)]))]
    detections = [FrameBoxes(np.array([box(0, 0), box(30, 0), box(10.1, 0)]), np.array([0.9, 0.8, 0.7]))]
    # TP, FP, TP: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> 1/2 * 1 + 1/2 * 2/3
    assert average_precision(detections, truths, "iou", 0.7) == pytest.approx(0.5 + 1 / 3)
    assert average_precision(detections, truths, "distance", 0.5) == pytest.approx(0.5 + 1 / 3)


def test_a_second_detection_of_one_object_is_a_false_positive():
    truths = [FrameBoxes(np.array([box(0, 0)]))]
    detections = [FrameBoxes(np.array([box(0.1, 0), box(0, 0)]), np.array([0.5, 0.9]))]
    assert average_precision(detections, truths, "iou", 0.7) == pytest.approx(1.0)  # the best first, the rest after recall 1
    detections = [FrameBoxes(np.array([box(0.1, 0), box(30, 0)]), np.array([0.5, 0.9]))]
    assert average_precision(detections, truths, "iou", 0.7) == pytest.approx(0.5)


def test_detections_on_ignored_ground_truth_count_neither_way():
    truths = [FrameBoxes(np.array([box(0, 0), box(10, 0)]), ignored=np.array([False, True]))]
    detections = [FrameBoxes(np.array([box(10, 0), box(0, 0)]), np.array([0.9, 0.8]))]
    assert average_precision(detections, truths, "iou", 0.7) == pytest.approx(1.0)


def test_frames_are_matched_separately():
    truths = [FrameBoxes(np.array([box(0, 0)])), FrameBoxes(np.zeros((0, 7)))]
    detections = [FrameBoxes(np.zeros((0, 7)), np.zeros(0)), FrameBoxes(np.array([box(0, 0)]), np.array([1.0]))]
    assert average_precision(detections, truths, "distance", 4.0) == 0.0
    assert centre_distance(np.array([box(0, 0)]), np.array([box(3, 4)]))[0, 0] == pytest.approx(5.0)


def test_map_averages_classes_and_distance_thresholds():
    truths = {c: [FrameBoxes(np.array([box(0, 0)]))] for c in ("Car", "Pedestrian", "Cyclist")}
    off = {c: [FrameBoxes(np.array([box(1.0, 0)]), np.array([1.0]))] for c in truths}
    result = bev_map(off, truths)
    assert result["distance"]["Car"] == pytest.approx(0.75)  # matched at 1, 2, 4 m, not at 0.5 m
    assert result["iou"]["Car"] == 0.0 and result["iou"]["Pedestrian"] == 1.0  # IoU 6 / 10: >= 0.5, < 0.7
    assert result["iou"]["mAP"] == pytest.approx(2 / 3)


def test_mismatched_frame_counts_are_refused():
    with pytest.raises(MetricError, match="one entry per frame"):
        average_precision([], [FrameBoxes(np.zeros((0, 7)))], "iou", 0.5)
