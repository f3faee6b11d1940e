"""Width and height of an image as displayed, read from its header.

JPEG and PNG headers are parsed directly (the common case, and faster than opening the file
with Pillow); every other format goes through Pillow. EXIF orientations 5-8 swap the sides.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from PIL import Image

ORIENTATION_TAG = 0x0112
IMAGE_WIDTH_TAG, IMAGE_LENGTH_TAG = 256, 257  # TIFF
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


class NotParsed(Exception):
    """The fast parser cannot answer; Pillow must."""


def display_size(fp: BinaryIO) -> tuple[int, int]:
    """(width, height) as displayed, EXIF orientation applied; raises on unreadable images."""
    start = fp.tell()
    head = fp.read(8)
    fp.seek(start)
    try:
        if head[:2] == b"\xff\xd8":
            width, height, orientation = _jpeg_header(fp)
        elif head == PNG_SIGNATURE:
            width, height, orientation = _png_header(fp)
        else:
            raise NotParsed
    except (NotParsed, struct.error, ValueError):
        fp.seek(start)
        with Image.open(fp) as image:
            width, height = stored_size(image)
            orientation = pillow_orientation(image)
    finally:
        fp.seek(start)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def stored_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the pixels as the file stores them, before any orientation.

    Pillow reports a TIFF's size already turned by its Orientation tag, and turns the pixels
    on load (checked on 11.0 to 13.0; other formats are left as stored, and a release may
    change that): the TIFF's own dimension tags say the same under every version.
    """
    tags = getattr(image, "tag_v2", None)
    if image.format == "TIFF" and tags is not None:
        width, height = tags.get(IMAGE_WIDTH_TAG), tags.get(IMAGE_LENGTH_TAG)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return image.size


def pillow_orientation(image: Image.Image) -> int:
    """The EXIF orientation Pillow sees (HEIF/AVIF rotation boxes are mapped to it).

    Read before `load()` it is the file's; after, it is what is left to apply (a decoder
    that turns the pixels itself, as Pillow does for TIFF, removes the tag).
    """
    try:
        return int(image.getexif().get(ORIENTATION_TAG, 1) or 1)
    except Exception:  # a broken EXIF block means "no orientation", not a broken image
        return 1


def _jpeg_header(fp: BinaryIO) -> tuple[int, int, int]:
    fp.read(2)
    orientation = 1
    while True:
        byte = fp.read(1)
        if not byte:
            raise NotParsed
        if byte != b"\xff":
            continue  # junk between segments: decoders skip it too
        marker = fp.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fp.read(1)
        if not marker:
            raise NotParsed
        code = marker[0]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
            continue  # markers without a length
        if code in (0xD9, 0xDA):
            raise NotParsed  # end of image or start of scan before any frame header
        (length,) = struct.unpack(">H", fp.read(2))
        if length < 2:
            raise NotParsed
        if code in SOF_MARKERS:
            _precision, height, width = struct.unpack(">BHH", fp.read(5))
            if width == 0 or height == 0:
                raise NotParsed  # height 0 means "defined later" (DNL); let Pillow decide
            return width, height, orientation
        if code == 0xE1 and orientation == 1:
            segment = fp.read(length - 2)
            if segment.startswith(b"Exif\x00\x00"):
                orientation = _exif_orientation(segment[6:])
            continue
        fp.seek(length - 2, 1)


def _png_header(fp: BinaryIO) -> tuple[int, int, int]:
    fp.read(8)
    length, kind = struct.unpack(">I4s", fp.read(8))
    if kind != b"IHDR" or length != 13:
        raise NotParsed
    width, height = struct.unpack(">II", fp.read(8))
    fp.seek(length - 8 + 4, 1)  # rest of IHDR + CRC
    orientation = 1
    # eXIf, when present, must come before the first IDAT chunk.
    for _ in range(64):
        header = fp.read(8)
        if len(header) < 8:
            break
        length, kind = struct.unpack(">I4s", header)
        if kind in (b"IDAT", b"IEND"):
            break
        if kind == b"eXIf":
            orientation = _exif_orientation(fp.read(length))
            break
        fp.seek(length + 4, 1)
    if width == 0 or height == 0:
        raise NotParsed
    return width, height, orientation


def _exif_orientation(tiff: bytes) -> int:
    """The orientation tag of IFD0 in a TIFF-structured EXIF block; 1 when absent or broken."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (offset,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[offset : offset + 2])
        for i in range(count):
            entry = offset + 2 + 12 * i
            tag, kind, _n = struct.unpack(order + "HHI", tiff[entry : entry + 8])
            if tag == ORIENTATION_TAG and kind == 3:
                (value,) = struct.unpack(order + "H", tiff[entry + 8 : entry + 10])
                return value if 1 <= value <= 8 else 1
    except (KeyError, struct.error):
        pass
    return 1
