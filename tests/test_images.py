"""effigy's one image decoder: formats by the bytes (an EPS named .png never reaches Ghostscript), the size
bounded before decoding, EXIF orientation applied; and the commands that read images go through it."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from effigy import images
from effigy.errors import ImageError
from tests.images import eps_bytes, exif_rotated_jpeg, other_format, png_bytes, strip_png

EFFIGY = [sys.executable, "-c", "from effigy.cli import main; main()"]


def test_the_stand_in_gs_runs_when_pillow_decodes_eps_unrestricted(tmp_path, fake_gs):
    """The check below means something: left to itself, Pillow starts the gs found on PATH for an EPS."""
    path = tmp_path / "eps_as.png"
    path.write_bytes(eps_bytes())
    with pytest.raises((OSError, ValueError)):  # the stand-in writes no picture back
        Image.open(path).load()
    assert fake_gs.exists() and "-dSAFER" in fake_gs.read_text()


def test_an_eps_named_png_is_refused_and_gs_never_starts(tmp_path, fake_gs):
    path = tmp_path / "eps_as.png"
    path.write_bytes(eps_bytes())
    with pytest.raises(ImageError, match="not a readable image: its bytes are not PNG, JPEG, WebP or BMP"):
        images.read_image_file(path)
    with pytest.raises(ImageError, match="not a readable image"):
        images.decode_image(eps_bytes(), "the upload")
    assert not fake_gs.exists()


@pytest.mark.parametrize("kind", ["TIFF", "GIF", "ICO", "PPM", "TGA", "PCX"])
def test_other_pillow_formats_are_refused_by_their_bytes(kind):
    with pytest.raises(ImageError, match="not a readable image"):
        images.decode_image(other_format(kind), "face.png")


@pytest.mark.parametrize("width, height", [(40_000_000, 1), (9000, 9000), (1, 13_000)])
def test_sizes_are_bounded_before_decoding_with_effigys_own_message(width, height):
    with pytest.raises(ImageError, match=f"is {width}x{height} pixels; give an image of at most"):
        images.decode_image(strip_png(width, height), "bomb.png")


def test_exif_orientation_is_applied_first():
    data, upright = exif_rotated_jpeg(6)
    decoded = np.asarray(images.decode_image(data))
    assert decoded.shape == upright.shape  # 48 high, 32 wide, as a viewer shows it
    assert decoded[:12, :, 0].mean() > 200 and decoded[:12, :, 2].mean() < 60  # red on top
    assert decoded[-12:, :, 0].mean() < 60


def test_accepted_formats_decode_to_rgb_and_damage_is_one_error(tmp_path, monkeypatch):
    for kind in ("PNG", "JPEG", "WEBP", "BMP"):
        buffer = Image.fromarray(np.full((20, 30, 3), 90, np.uint8))
        path = tmp_path / f"face.{kind.lower()}"
        buffer.save(path, kind)
        decoded = images.read_image_file(path)
        assert decoded.mode == "RGB" and decoded.size == (30, 20)
    with pytest.raises(ImageError, match="damaged image"):
        images.decode_image(png_bytes()[:200])
    with pytest.raises(ImageError, match="is empty"):
        images.decode_image(b"")
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 10)
    with pytest.raises(ImageError, match="at most 0 MB"):
        images.read_image_file(tmp_path / "face.png")


def _effigy(args, cwd, env=None):
    return subprocess.run([*EFFIGY, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_detect_deepfake_reads_through_the_decoder(tmp_path, fake_gs):
    """On the CLI: an EPS named .png is one line and exit 2 with gs never run; a sideways JPEG scores like its
    upright twin."""
    (tmp_path / "eps_as.png").write_bytes(eps_bytes())
    refused = _effigy(["detect", "deepfake", "eps_as.png"], tmp_path, {"PATH": os.environ["PATH"]})
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "not a readable image" in refused.stderr and not fake_gs.exists()
    data, upright = exif_rotated_jpeg(6)
    (tmp_path / "sideways.jpg").write_bytes(data)
    Image.fromarray(np.asarray(images.decode_image(data))).save(tmp_path / "upright.png")
    scored = _effigy(["detect", "deepfake", "sideways.jpg", "upright.png", "--json"], tmp_path)
    assert scored.returncode == 0, scored.stderr
    sideways, straight = (json.loads(line)["p_fake"] for line in scored.stdout.splitlines())
    assert sideways == pytest.approx(straight, abs=1e-6)


def test_file_names_with_brackets_print_as_they_are(tmp_path):
    (tmp_path / "odd [").mkdir()
    for name in ("face [copy].png", "face [v2].png", "odd [/] name.png"):
        (tmp_path / name).write_bytes(png_bytes())
    shown = _effigy(["detect", "deepfake", str(tmp_path), str(tmp_path / "odd [/] name.png")], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "face [copy].png" in shown.stdout and "face [v2].png" in shown.stdout and "[/]" in shown.stdout
    assert "more columns with --json" in shown.stdout  # detect writes no results file, so none is promised
    missing = _effigy(["detect", "deepfake", str(tmp_path / "gone [/] [red].png")], tmp_path)
    assert missing.returncode == 2 and "gone [/] [red].png does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_held_out_faces_decode_as_before():
    """The held-out photographs go through the same decoder (their crops are pinned by the world's tests)."""
    from effigy.worlds.faces import held_out_face

    assert held_out_face("astronaut").shape == (25, 25)
    assert Path(images.__file__).name == "images.py"
