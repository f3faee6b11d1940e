"""Reading one image file: uploads checked within a pixel budget, MIME types for serving."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from browse_support import blank_png
from PIL import Image

from shared.imagefile import ImageProblem, check_upload

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
