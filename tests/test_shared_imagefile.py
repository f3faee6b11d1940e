"""One image file read: its displayed size and upright thumbnail, whatever Pillow does itself;
uploads checked within a pixel budget; MIME types for serving.

The expected pictures are made with numpy from the EXIF definitions of the eight
orientations, not with Pillow's own orientation handling, which differs by format and may
change between releases (Pillow turns TIFFs itself, on open and load; JPEG, PNG, WebP and
AVIF it leaves as stored): these tests run against whichever Pillow is installed and fail if
a release starts (or stops) turning a format itself.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from browse_support import blank_png
from PIL import Image, features

from shared.imagefile import ImageProblem, check_upload, inspect_image, prepare_decoders

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


# --- uploads: checked within a pixel budget; MIME types -----------------------------------

ROOT = Path(__file__).resolve().parent.parent
WILD = ROOT / "tests" / "data" / "wild"
BOMB_LIMIT = 178_956_970


def jpeg(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(out, "JPEG", quality=70)
    return out.getvalue()


def test_a_large_jpeg_is_checked_at_an_eighth_of_its_size():
    # 4000x3000 = 12 MP, but decoded at 500x375: well within a budget of 1 MP.
    assert check_upload(jpeg(4000, 3000), BOMB_LIMIT, 1_000_000) == "JPEG"


def test_a_jpeg_whose_eighth_is_over_the_budget_is_refused():
    with pytest.raises(ImageProblem, match="too large") as err:
        check_upload(jpeg(4000, 3000), BOMB_LIMIT, 100_000)
    assert err.value.kind == "too_large"


def test_other_formats_are_measured_by_their_header_before_any_decoding():
    # A header promising 12000x12000 and one row of pixels: refused as too large, which it
    # could not be if it had been decoded first (it would have failed as truncated).
    header_only = blank_png(12000, 12000, rows=1)[:60]  # cut inside its pixel data
    with pytest.raises(ImageProblem) as err:
        check_upload(header_only, BOMB_LIMIT, 50_000_000)
    assert err.value.kind == "too_large" and "12000x12000" in str(err.value)


def test_the_hostile_png_of_the_issue_is_refused_and_an_honest_one_passes():
    with pytest.raises(ImageProblem) as err:
        check_upload(blank_png(13000, 13000), BOMB_LIMIT, 50_000_000)
    assert err.value.kind == "too_large"
    assert check_upload(blank_png(3000, 2000), BOMB_LIMIT, 50_000_000) == "PNG"


@pytest.mark.parametrize("data, kind", [
    (b"", "empty"),
    (b"<html>not a picture</html>", "not_image"),
    ((WILD / "formats" / "python.ico").read_bytes(), "format"),
    ((WILD / "misc" / "truncated_jpeg.jpg").read_bytes(), "unreadable"),
    ((WILD / "misc" / "broken_data_stream.png").read_bytes(), "unreadable"),
])
def test_unusable_uploads_say_why(data, kind):
    with pytest.raises(ImageProblem) as err:
        check_upload(data, BOMB_LIMIT, 50_000_000)
    assert err.value.kind == kind


def test_content_types_are_right_in_a_process_that_has_decoded_nothing():
    # Pillow fills its MIME table as plugins load; a fresh process has loaded none.
    script = ("from shared.imagefile import content_type as t; "
              "print(t('JPEG'), t('MPO'), t('PNG'), t('GIF'), t('WEBP'), t('TIFF'), t('BMP'), "
              "t('AVIF'), t('HEIF'), t('NOPE'))")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True).stdout.split()
    assert out == ["image/jpeg", "image/jpeg", "image/png", "image/gif", "image/webp",
                   "image/tiff", "image/bmp", "image/avif", "image/heif",
                   "application/octet-stream"]
