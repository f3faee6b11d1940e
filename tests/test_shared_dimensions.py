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
