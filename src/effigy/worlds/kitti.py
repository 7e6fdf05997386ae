"""The KITTI 3D object layout, both ways, so simulated frames and a user's real KITTI data share one path.

A KITTI root holds ``velodyne/<id>.bin`` (float32 x, y, z, reflectance), ``label_2/<id>.txt`` (one object per
line, in the rectified camera frame: type, truncation, occlusion, alpha, 2D box, h, w, l, bottom-centre x y z,
rotation_y) and ``calib/<id>.txt`` (P0-P3, R0_rect, Tr_velo_to_cam, Tr_imu_to_velo), with
``ImageSets/<split>.txt`` listing the ids. Boxes come back in the lidar frame as (x, y, z, l, w, h, yaw) with
z the box centre; classes other than effigy's three (Van, Truck, DontCare, ...) are left out on import.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from effigy.errors import WorldError
from effigy.worlds.lidar import CLASSES, Frame, points_in_boxes, wrap_angle

# The calibration written for simulated frames: KITTI's usual axes (camera x right, y down, z forward) and
# its typical lidar-to-camera offset and left-colour-camera projection.
SIM_TR_VELO_TO_CAM = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, -0.08], [1.0, 0.0, 0.0, -0.27]])
SIM_P2 = np.array([[721.54, 0.0, 609.56, 44.86], [0.0, 721.54, 172.85, 0.22], [0.0, 0.0, 1.0, 0.0027]])
IMAGE_SIZE = (1242, 375)


def _homogeneous(matrix: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: matrix.shape[0], : matrix.shape[1]] = matrix
    return out


def lidar_to_camera(calib: dict[str, np.ndarray]) -> np.ndarray:
    """4x4 map from lidar to rectified camera coordinates: R0_rect @ Tr_velo_to_cam."""
    return _homogeneous(calib["R0_rect"]) @ _homogeneous(calib["Tr_velo_to_cam"])


def simulated_calib() -> dict[str, np.ndarray]:
    return {**{f"P{i}": SIM_P2 for i in range(4)}, "R0_rect": np.eye(3), "Tr_velo_to_cam": SIM_TR_VELO_TO_CAM,
            "Tr_imu_to_velo": np.eye(4)[:3]}


def write_calib(path: Path, calib: dict[str, np.ndarray]) -> None:
    path.write_text("".join(f"{key}: {' '.join(f'{v:.12e}' for v in calib[key].ravel())}\n"
                            for key in ("P0", "P1", "P2", "P3", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")))


def read_text(path: Path) -> str:
    """A KITTI text file (label, calibration, split list) as text, or one error naming it: binary content is
    not a KITTI file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise WorldError(f"{path} is not a text file; a KITTI {path.parent.name} file is UTF-8 text.") from None
    except OSError as error:
        raise WorldError(f"{path} cannot be read ({error.strerror or error}).") from None


def read_calib(path: Path) -> dict[str, np.ndarray]:
    """A KITTI calibration file, checked: every matrix finite, and the lidar-to-camera map invertible."""
    shapes = {"R0_rect": (3, 3), "Tr_velo_to_cam": (3, 4), "Tr_imu_to_velo": (3, 4)}
    calib = {}
    for line in read_text(path).splitlines():
        if ":" not in line:
            continue
        key, values = line.split(":", 1)
        shape = shapes.get(key.strip(), (3, 4))
        numbers = _floats(values.split(), path)
        if len(numbers) != shape[0] * shape[1]:
            raise WorldError(f"{path}: {key.strip()} has {len(numbers)} numbers, a KITTI calibration has "
                             f"{shape[0] * shape[1]} there.")
        calib[key.strip()] = np.array(numbers).reshape(shape)
    missing = {"R0_rect", "Tr_velo_to_cam"} - calib.keys()
    if missing:
        raise WorldError(f"{path}: calibration lacks {', '.join(sorted(missing))}; a KITTI calib file has "
                         "P0-P3, R0_rect, Tr_velo_to_cam and Tr_imu_to_velo.")
    bad = sorted(key for key, matrix in calib.items() if not np.isfinite(matrix).all())
    if bad:
        raise WorldError(f"{path}: {', '.join(bad)} holds NaN or infinite numbers.")
    if abs(np.linalg.det(lidar_to_camera(calib))) < 1e-9:
        raise WorldError(f"{path}: R0_rect @ Tr_velo_to_cam is singular: boxes cannot be placed in the lidar frame.")
    return calib


def boxes_to_label_lines(boxes: np.ndarray, labels: list[str], calib: dict[str, np.ndarray],
                         occlusion: np.ndarray | None = None) -> list[str]:
    """KITTI label lines for lidar-frame boxes (bottom centre in the camera frame, rotation_y = -yaw - pi/2)."""
    to_cam = lidar_to_camera(calib)
    lines = []
    for i, (box, label) in enumerate(zip(boxes, labels)):
        x, y, z, length, w, h, yaw = box
        bottom = to_cam @ np.array([x, y, z - h / 2, 1.0])
        ry = wrap_angle(-yaw - np.pi / 2)
        alpha = wrap_angle(ry - np.arctan2(bottom[0], bottom[2]))
        left, top, right, bottom_px = _image_box(box, calib)
        occluded = 0 if occlusion is None else int(occlusion[i])
        lines.append(f"{label} 0.00 {occluded} {alpha:.6f} {left:.2f} {top:.2f} {right:.2f} {bottom_px:.2f} "
                     f"{h:.6f} {w:.6f} {length:.6f} {bottom[0]:.6f} {bottom[1]:.6f} {bottom[2]:.6f} {ry:.6f}")
    return lines


def label_lines_to_boxes(lines: list[str], calib: dict[str, np.ndarray], path: Path | str = "label") -> tuple[np.ndarray, list[str]]:
    """Lidar-frame boxes of effigy's classes from KITTI label lines."""
    to_lidar = np.linalg.inv(lidar_to_camera(calib))
    boxes, labels = [], []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 15:
            raise WorldError(f"{path}:{number}: a KITTI label line has 15 fields (type ... rotation_y), "
                             f"this one has {len(fields)}.")
        if fields[0] not in CLASSES:
            continue
        h, w, length, cx, cy, cz, ry = values = _floats(fields[8:15], f"{path}:{number}")
        if not np.isfinite(values).all() or min(h, w, length) <= 0:
            raise WorldError(f"{path}:{number}: a box needs finite numbers and positive height, width and "
                             "length.")
        bottom = to_lidar @ np.array([cx, cy, cz, 1.0])
        boxes.append([bottom[0], bottom[1], bottom[2] + h / 2, length, w, h, wrap_angle(-ry - np.pi / 2)])
        labels.append(fields[0])
    return np.array(boxes, dtype=np.float64).reshape(-1, 7), labels


def _floats(texts: list[str], where: object) -> list[float]:
    try:
        return [float(v) for v in texts]
    except ValueError:
        raise WorldError(f"{where}: expected numbers, found {' '.join(texts)[:60]!r}; is this a KITTI file?") from None


def _image_box(box: np.ndarray, calib: dict[str, np.ndarray]) -> tuple[float, float, float, float]:
    """The 2D box of a 3D box's corners projected by P2 and clipped to the image (zeros if behind)."""
    corners = _corners(box)
    cam = (lidar_to_camera(calib) @ np.c_[corners, np.ones(8)].T)[:3]
    if (cam[2] <= 0.1).any():
        return 0.0, 0.0, 0.0, 0.0
    pixels = calib["P2"] @ np.r_[cam, np.ones((1, 8))]
    u, v = pixels[0] / pixels[2], pixels[1] / pixels[2]
    width, height = IMAGE_SIZE
    return (float(np.clip(u.min(), 0, width - 1)), float(np.clip(v.min(), 0, height - 1)),
            float(np.clip(u.max(), 0, width - 1)), float(np.clip(v.max(), 0, height - 1)))


def _corners(box: np.ndarray) -> np.ndarray:
    x, y, z, length, w, h, yaw = box
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) / 2
    local = signs * np.array([length, w, h])
    cos, sin = np.cos(yaw), np.sin(yaw)
    return np.c_[cos * local[:, 0] - sin * local[:, 1] + x, sin * local[:, 0] + cos * local[:, 1] + y, local[:, 2] + z]


def export_kitti(frames: list[Frame], root: str | Path, split: str = "train") -> Path:
    """Write ``frames`` in the KITTI object layout under ``root`` (ids numbered from 0), atomically: the files
    go to a temporary folder beside ``root``, renamed to ``root`` at the end, so an interrupted export leaves no
    half-written root to be read later.

    Returns:
        The root.
    """
    import os
    import shutil

    root = Path(root)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise WorldError(f"{root} is not an empty folder; write the frames into a new one.")
    partial = root.with_name(f".{root.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        _write_frames(frames, partial, split)
        os.replace(partial, root)  # onto an absent or empty folder
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def _write_frames(frames: list[Frame], root: Path, split: str) -> None:
    for sub in ("velodyne", "label_2", "calib", "ImageSets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    calib = simulated_calib()
    ids = []
    for index, frame in enumerate(frames):
        frame_id = f"{index:06d}"
        frame.points.astype(np.float32).tofile(root / "velodyne" / f"{frame_id}.bin")
        occlusion = np.clip(2 - points_in_boxes(frame.points, frame.boxes) // 20, 0, 2)
        lines = boxes_to_label_lines(frame.boxes, frame.labels, calib, occlusion)
        (root / "label_2" / f"{frame_id}.txt").write_text("".join(line + "\n" for line in lines))
        write_calib(root / "calib" / f"{frame_id}.txt", calib)
        ids.append(frame_id)
    (root / "ImageSets" / f"{split}.txt").write_text("".join(i + "\n" for i in ids))


FRAME_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a KITTI frame id names files: no separators, no '..'


def import_kitti(root: str | Path, split: str | None = None, limit: int | None = None,
                 labelled: bool = False) -> list[Frame]:
    """Frames from a KITTI object root: the ids of ``ImageSets/<split>.txt``, or every ``velodyne/*.bin``;
    every file of every frame is checked, and an error names the file (and line) that is wrong.

    Args:
        root: the folder holding velodyne/, label_2/ (optional: test sets have none) and calib/.
        split: an ImageSets file name without ``.txt``.
        limit: read at most this many frames.
        labelled: every frame must have a label file (evaluation: a frame without one would count its
            detections as false positives), and at least one object of effigy's classes must be labelled.
    """
    root = Path(root)
    if not (root / "velodyne").is_dir():
        raise WorldError(f"{root} has no velodyne/ folder: point at a KITTI object root "
                         "(training/ or testing/, holding velodyne/, label_2/ and calib/).")
    if split is not None:
        listing = root / "ImageSets" / f"{split}.txt"
        if not listing.is_file():
            raise WorldError(f"{listing} not found: give a split that has an ImageSets file, or none for every frame.")
        ids = read_text(listing).split()
        bad = next((i for i in ids if not FRAME_ID.fullmatch(i)), None)
        if bad is not None:
            raise WorldError(f"{listing}: {bad[:40]!r} is not a frame id (letters, digits, _ and - only).")
    else:
        ids = sorted(p.stem for p in (root / "velodyne").glob("*.bin"))
    if not ids:
        raise WorldError(f"{root} has no frames{f' in ImageSets/{split}.txt' if split else ' (velodyne/*.bin)'}; "
                         "point at a KITTI object root with frames.")
    frames = [_read_frame(root, frame_id, labelled) for frame_id in ids[:limit]]
    if labelled and not any(len(f.labels) for f in frames):
        raise WorldError(f"{root}: no frame has a labelled {', '.join(CLASSES)}; average precision needs some.")
    return frames


def _read_frame(root: Path, frame_id: str, labelled: bool) -> Frame:
    velodyne = root / "velodyne" / f"{frame_id}.bin"
    if not velodyne.is_file():
        raise WorldError(f"{velodyne} not found: the split lists frame {frame_id} but velodyne/ has no such file.")
    raw = np.fromfile(velodyne, dtype=np.float32)
    if raw.size % 4:
        raise WorldError(f"{velodyne}: {raw.size} floats is not a whole number of (x, y, z, reflectance) points.")
    if not np.isfinite(raw).all():
        raise WorldError(f"{velodyne}: {int((~np.isfinite(raw)).sum())} NaN or infinite values; every point's x, y, "
                         "z and reflectance must be finite.")
    label = root / "label_2" / f"{frame_id}.txt"
    boxes, labels = np.zeros((0, 7)), []
    if labelled and not label.is_file():
        raise WorldError(f"{label} not found: evaluation needs a label file for every frame (an empty one for a "
                         "frame without objects).")
    if label.is_file():
        calib = root / "calib" / f"{frame_id}.txt"
        if not calib.is_file():
            raise WorldError(f"{calib} not found: a labelled KITTI frame needs its calibration to place the boxes.")
        boxes, labels = label_lines_to_boxes(read_text(label).splitlines(), read_calib(calib), label)
    return Frame(raw.reshape(-1, 4), boxes, labels, frame_id)
