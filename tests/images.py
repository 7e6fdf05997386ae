"""Small image fixtures for the decoder's tests: a PNG face-sized image, PNGs whose header claims huge sizes
(they compress to kilobytes), an EPS document, and other Pillow formats."""
import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_bytes(size: int = 64, seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def strip_png(width: int, height: int) -> bytes:
    """A valid grey PNG of ``width`` x ``height`` zero pixels, built by hand so that making it costs no memory
    (the image data is one zlib stream of zero rows, compressed as it is generated)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    compressor, row, parts = zlib.compressobj(9), bytes(width + 1), []
    for _ in range(height):
        parts.append(compressor.compress(row))
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def eps_bytes() -> bytes:
    """An Encapsulated PostScript document: Pillow's EPS plugin would run Ghostscript on it."""
    return (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n"
            b"newpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n")


def other_format(kind: str) -> bytes:
    """A face-sized image in a format effigy does not decode (TIFF, GIF, ICO, ...)."""
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(buffer, kind)
    return buffer.getvalue()


def exif_rotated_jpeg(orientation: int = 6) -> tuple[bytes, np.ndarray]:
    """A JPEG stored sideways with EXIF ``orientation``, and the upright pixels a viewer shows."""
    upright = np.zeros((48, 32, 3), np.uint8)
    upright[:16] = (255, 0, 0)  # red on top, as a viewer shows it
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # orientation 6 undoes this
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue(), upright
