"""The one image decoder: every image effigy reads (a file, a folder's files, an HTTP upload) comes through here.

Why one place: Pillow decodes dozens of formats by their bytes, whatever the file is called, and some of its
plugins run other programs (the EPS plugin starts Ghostscript on the upload). A face crop is a PNG, JPEG, WebP
or BMP; everything else is refused by its bytes before a plugin runs. The size is read from the header and
bounded before any pixel is decoded (a 40,000,000 x 1 PNG is five kilobytes), large JPEGs decode at a reduced
scale, and the EXIF orientation is applied first, so that the model sees the picture every viewer shows.
"""
from __future__ import annotations

import io
from pathlib import Path

from effigy.errors import ImageError

FORMATS = ("PNG", "JPEG", "WEBP", "BMP")  # decoded by their bytes; no other Pillow plugin is ever tried
MAX_PIXELS = 24_000_000  # a 24-megapixel photo: ample for a face model, a bound on decoding memory
MAX_SIDE = 12_000  # a longer side is no photograph (a 40,000,000 x 1 strip blocks the decoder for seconds)
MAX_FILE_BYTES = 64 * 2**20  # an image file is read whole; larger files are refused before reading
DRAFT_SIDE = 1024  # JPEGs at least twice this on their short side decode at 1/2, 1/4 or 1/8 scale
ACCEPTED = "PNG, JPEG, WebP or BMP"


def decode_image(data: bytes, name: str = "the upload"):
    """An upright RGB ``PIL.Image`` of encoded ``data``, or one :class:`ImageError` saying what was wrong.

    Args:
        data: the file's or the upload's bytes.
        name: what to call it in the error (a path, "the upload").

    Returns:
        The decoded image, EXIF orientation applied, in RGB.

    Raises:
        ImageError: empty bytes, a format outside PNG / JPEG / WebP / BMP (by the bytes, not the name), more
            than ``MAX_PIXELS`` pixels or a side over ``MAX_SIDE``, or damaged data.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not data:
        raise ImageError(f"{name} is empty; give a {ACCEPTED} image.")
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(f"{name} is not a readable image: its bytes are not {ACCEPTED}; convert it to PNG "
                         "or JPEG.") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageError(f"{name} is not a readable image ({type(error).__name__}); give a {ACCEPTED} image.") \
            from None
    with image:
        _check_size(image.width, image.height, name)
        if image.format == "JPEG":
            image.draft("RGB", (DRAFT_SIDE, DRAFT_SIDE))
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return upright.convert("RGB")
        except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as error:
            raise ImageError(f"{name} is a damaged image ({type(error).__name__}); give a readable {ACCEPTED} "
                             "image.") from None


def _check_size(width: int, height: int, name: str) -> None:
    if width < 1 or height < 1 or width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
        raise ImageError(f"{name} is {width}x{height} pixels; give an image of at most {MAX_PIXELS:,} pixels "
                         f"and {MAX_SIDE:,} on a side (crop or downscale it).")


def read_image_file(path: Path):
    """:func:`decode_image` of a file, refused before reading when it is missing, a folder, or too large."""
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path} is not a file; give face images as files ({ACCEPTED}).")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ImageError(f"{path} is {size / 2**20:.0f} MB; give an image file of at most "
                         f"{MAX_FILE_BYTES // 2**20} MB.")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ImageError(f"{path} cannot be read ({error.strerror or error}).") from None
    return decode_image(data, str(path))
