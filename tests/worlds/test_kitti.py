import numpy as np
import pytest

from effigy.errors import WorldError
from effigy.worlds.kitti import export_kitti, import_kitti
from effigy.worlds.lidar import simulate_frame


def test_frames_survive_a_round_trip_through_the_kitti_layout(tmp_path):
    frames = [simulate_frame(s) for s in (1, 2)]
    export_kitti(frames, tmp_path, split="val")
    back = import_kitti(tmp_path, split="val")
    assert [f.frame_id for f in back] == ["000000", "000001"]
    for original, read in zip(frames, back):
        assert np.array_equal(original.points, read.points)
        assert read.labels == original.labels
        np.testing.assert_allclose(read.boxes, original.boxes, atol=1e-5)


def test_the_label_file_uses_kitti_camera_conventions(tmp_path):
    frame = simulate_frame(1)
    export_kitti([frame], tmp_path)
    fields = (tmp_path / "label_2" / "000000.txt").read_text().splitlines()[0].split()
    x, y, z, length, w, h, yaw = frame.boxes[0]
    assert fields[0] == frame.labels[0] and len(fields) == 15
    h_, w_, l_, cam_x, cam_y, cam_z, ry = map(float, fields[8:15])
    assert (h_, w_, l_) == pytest.approx((h, w, length), abs=1e-5)
    assert cam_z == pytest.approx(x - 0.27, abs=1e-5) and cam_x == pytest.approx(-y, abs=1e-5)
    assert cam_y == pytest.approx(-(z - h / 2) - 0.08, abs=1e-5)  # the bottom centre, camera y pointing down
    assert np.cos(ry) == pytest.approx(np.cos(-yaw - np.pi / 2), abs=1e-5)


def test_other_kitti_classes_are_left_out_and_short_lines_refused(tmp_path):
    export_kitti([simulate_frame(1)], tmp_path)
    label = tmp_path / "label_2" / "000000.txt"
    label.write_text("DontCare -1 -1 -10 0 0 0 0 -1 -1 -1 -1000 -1000 -1000 -10\n" + label.read_text())
    assert "DontCare" not in import_kitti(tmp_path)[0].labels
    label.write_text("Car 0 0 0\n")
    with pytest.raises(WorldError, match="15 fields"):
        import_kitti(tmp_path)


def test_a_folder_without_velodyne_is_refused_with_the_layout(tmp_path):
    with pytest.raises(WorldError, match="velodyne"):
        import_kitti(tmp_path)


def test_missing_calibration_or_point_files_are_one_clear_error(tmp_path):
    export_kitti([simulate_frame(1)], tmp_path, split="val")
    (tmp_path / "calib" / "000000.txt").unlink()
    with pytest.raises(WorldError, match="calibration"):
        import_kitti(tmp_path, split="val")
    (tmp_path / "ImageSets" / "val.txt").write_text("000007\n")
    with pytest.raises(WorldError, match="no such file"):
        import_kitti(tmp_path, split="val")


def test_garbled_label_or_calibration_text_is_refused(tmp_path):
    export_kitti([simulate_frame(1)], tmp_path)
    label = tmp_path / "label_2" / "000000.txt"
    label.write_text("Car 0 0 0 1 2 3 4 h w l x y z r\n")
    with pytest.raises(WorldError, match="expected numbers"):
        import_kitti(tmp_path)
    export_kitti([simulate_frame(1)], tmp_path)
    (tmp_path / "calib" / "000000.txt").write_text("R0_rect: 1 0 0\nTr_velo_to_cam: 1 2 3\n")
    with pytest.raises(WorldError, match="numbers"):
        import_kitti(tmp_path)
