import io

import pytest
from PIL import Image, ImageOps

from shared.dimensions import display_size
from shared.imagefile import prepare_decoders

from conftest import WILD, wild_manifest

OK_ROWS = [row for row in wild_manifest() if row["expected_outcome"] == "ok"]


@pytest.mark.parametrize("row", OK_ROWS, ids=[row["path"] for row in OK_ROWS])
def test_wild_images_have_their_displayed_size(row):
    prepare_decoders(178_956_970)
    with open(WILD / row["path"], "rb") as f:
        assert display_size(f) == (int(row["expected_width"]), int(row["expected_height"]))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_fast_header_reader_agrees_with_pillow_exif_transpose(fmt, orientation):
    image = Image.new("RGB", (40, 30), "red")
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = io.BytesIO()
    image.save(data, fmt, exif=exif.tobytes())
    data.seek(0)
    with Image.open(io.BytesIO(data.getvalue())) as reopened:
        expected = ImageOps.exif_transpose(reopened).size
    assert display_size(data) == expected
    assert data.tell() == 0  # the stream is left where it was


def test_jpeg_with_large_metadata_before_the_frame_header():
    image = Image.new("RGB", (321, 123))
    data = io.BytesIO()
    image.save(data, "JPEG", icc_profile=b"\0" * 200_000)  # several APP2 segments
    data.seek(0)
    assert display_size(data) == (321, 123)


def test_heic_rotation_is_applied_once(tmp_path):
    """pillow-heif turns EXIF orientation into a HEIF rotation box on save and applies it on open."""
    from shared.imagefile import inspect_image

    prepare_decoders(178_956_970)
    image = Image.new("RGB", (120, 60), "red")
    image.paste((0, 0, 255), (0, 0, 30, 20))  # blue in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: portrait, blue top-right
    path = tmp_path / "rotated.heic"
    image.save(path, format="HEIF", exif=exif.tobytes())
    with open(path, "rb") as f:
        assert display_size(f) == (60, 120)
    seen = inspect_image(path, 178_956_970)
    assert (seen.width, seen.height) == (60, 120)
    thumb = Image.open(io.BytesIO(seen.thumbnail)).convert("RGB")
    assert thumb.size == (60, 120)
    red, _g, blue = thumb.getpixel((55, 3))
    assert blue > 200 and red < 60
