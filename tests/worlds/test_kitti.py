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
    export_kitti([simulate_frame(1)], tmp_path / "again")
    (tmp_path / "again" / "calib" / "000000.txt").write_text("R0_rect: 1 0 0\nTr_velo_to_cam: 1 2 3\n")
    with pytest.raises(WorldError, match="numbers"):
        import_kitti(tmp_path / "again")


def _root(tmp_path, frames=2):
    return export_kitti([simulate_frame(s) for s in range(1, frames + 1)], tmp_path / "kitti", split="val")


@pytest.mark.parametrize("damage, words", [
    (lambda r: (r / "velodyne" / "000001.bin").write_bytes(np.array([[1, 2, 3, np.nan]], np.float32).tobytes()),
     "velodyne/000001.bin: 1 NaN or infinite"),
    (lambda r: (r / "label_2" / "000001.txt").unlink(), "label_2/000001.txt not found"),
    (lambda r: (r / "label_2" / "000000.txt").write_bytes(bytes(range(256))), "label_2/000000.txt is not a text file"),
    (lambda r: (r / "label_2" / "000000.txt").write_text("Car 0 0 0 0 0 0 0 1.5 1.6 nan 1 1 10 0\n"),
     "000000.txt:1: a box needs finite numbers"),
    (lambda r: (r / "label_2" / "000000.txt").write_text("Car 0 0 0 0 0 0 0 1.5 -1.6 3.9 1 1 10 0\n"),
     "positive height"),
    (lambda r: (r / "calib" / "000000.txt").write_text((r / "calib" / "000000.txt").read_text().replace(
        "R0_rect: 1.0", "R0_rect: 0.0").replace("R0_rect: 1.000000000000e+00", "R0_rect: 0.000000000000e+00")),
     "singular"),
    (lambda r: (r / "calib" / "000000.txt").write_text((r / "calib" / "000000.txt").read_text().replace(
        "Tr_velo_to_cam: 0.000000000000e+00", "Tr_velo_to_cam: inf")), "NaN or infinite"),
    (lambda r: (r / "calib" / "000000.txt").write_bytes(b"\xff\xfe" * 50), "is not a text file"),
    (lambda r: (r / "ImageSets" / "val.txt").write_bytes(b"\x00\xff\x80" * 20), "is not a text file"),
    (lambda r: (r / "ImageSets" / "val.txt").write_text("../../etc/passwd\n"), "not a frame id"),
    (lambda r: (r / "ImageSets" / "val.txt").write_text(""), "has no frames"),
    (lambda r: [(r / "label_2" / f"00000{i}.txt").write_text("") for i in (0, 1)], "no frame has a labelled"),
])
def test_every_file_of_every_frame_is_checked_and_named(tmp_path, damage, words):
    root = _root(tmp_path)
    damage(root)
    with pytest.raises(WorldError, match=words.replace("(", r"\(")):
        import_kitti(root, split="val", labelled=True)


def test_an_interrupted_export_leaves_no_root_and_a_full_folder_is_refused(tmp_path, monkeypatch):
    import effigy.worlds.kitti as kitti

    calls = []

    def failing(path, calib):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(kitti, "write_calib", failing)
    with pytest.raises(KeyboardInterrupt):
        export_kitti([simulate_frame(s) for s in (1, 2, 3)], tmp_path / "kitti", split="val")
    assert list(tmp_path.iterdir()) == []  # neither the root nor its temporary folder
    monkeypatch.undo()
    root = _root(tmp_path)
    with pytest.raises(WorldError, match="not an empty folder"):
        export_kitti([simulate_frame(1)], root)
