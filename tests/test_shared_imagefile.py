"""One image file read: its displayed size and upright thumbnail, whatever Pillow does itself.

The expected pictures are made with numpy from the EXIF definitions of the eight
orientations, not with Pillow's own orientation handling, which differs by format and may
change between releases (Pillow turns TIFFs itself, on open and load; JPEG, PNG, WebP and
AVIF it leaves as stored): these tests run against whichever Pillow is installed and fail if
a release starts (or stops) turning a format itself.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, features

from shared.imagefile import inspect_image, prepare_decoders

STORED_W, STORED_H = 150, 60  # landscape as stored: a swap shows in the size


def stored_pixels() -> np.ndarray:
    """Smooth ramps (they survive lossy codecs) and a block in the stored top-left corner."""
    y, x = np.mgrid[0:STORED_H, 0:STORED_W]
    pixels = np.zeros((STORED_H, STORED_W, 3), np.uint8)
    pixels[..., 0] = 30 + 200 * x / STORED_W
    pixels[..., 1] = 30 + 200 * y / STORED_H
    pixels[: STORED_H // 3, : STORED_W // 4, 2] = 230
    return pixels


def as_displayed(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """What a viewer shows for stored `pixels` and an EXIF orientation (CIPA DC-008)."""
    turned = {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],  # mirrored left-right
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1, :],  # mirrored top-bottom
        5: lambda a: a.swapaxes(0, 1),  # transposed: stored top-left stays top-left
        6: lambda a: np.rot90(a, -1),  # rotated 90 clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transverse
        8: lambda a: np.rot90(a, 1),  # rotated 90 counter-clockwise
    }[orientation]
    return np.ascontiguousarray(turned(pixels))


def encode(pixels: np.ndarray, kind: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    fmt, options = {
        "JPEG": ("JPEG", {"quality": 95}),
        "PNG": ("PNG", {}),
        "WEBP": ("WEBP", {"lossless": True}),
        "TIFF": ("TIFF", {}),
        "TIFF-deflate": ("TIFF", {"compression": "tiff_deflate"}),
        "AVIF": ("AVIF", {"quality": 95}),
        "HEIF": ("HEIF", {"quality": 95}),
    }[kind]
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, exif=exif.tobytes(), **options)
    return out.getvalue()


KINDS = ["JPEG", "PNG", "WEBP", "TIFF", "TIFF-deflate", "HEIF",
         pytest.param("AVIF", marks=pytest.mark.skipif(
             not features.check("avif"), reason="this Pillow has no AVIF codec"))]


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("kind", KINDS)
def test_orientation_is_applied_exactly_once(tmp_path, kind, orientation):
    prepare_decoders(178_956_970)  # registers the HEIF opener and encoder
    pixels = stored_pixels()
    path = tmp_path / f"o{orientation}.{kind.split('-')[0].lower()}"
    path.write_bytes(encode(pixels, kind, orientation))
    expected = as_displayed(pixels, orientation).astype(np.int16)

    seen = inspect_image(path, 178_956_970)
    assert (seen.width, seen.height) == (expected.shape[1], expected.shape[0])
    thumb = np.asarray(Image.open(io.BytesIO(seen.thumbnail)).convert("RGB"), np.int16)
    assert thumb.shape == expected.shape
    # Lossy codecs blur a little; a wrong turn or mirror is off by ~100 on average.
    assert np.abs(thumb - expected).mean() < 12


@pytest.mark.parametrize("kind", ["TIFF", "JPEG"])
def test_a_thumbnail_of_an_image_not_yet_loaded_is_turned_once(kind):
    """make_thumbnail reads what is left to turn only after the decoder had its say."""
    from shared.imagefile import make_thumbnail

    pixels = stored_pixels()
    with Image.open(io.BytesIO(encode(pixels, kind, 6))) as image:
        thumb = np.asarray(Image.open(io.BytesIO(make_thumbnail(image))).convert("RGB"), np.int16)
    expected = as_displayed(pixels, 6).astype(np.int16)
    assert thumb.shape == expected.shape and np.abs(thumb - expected).mean() < 12
