"""shared.photo_metadata: real camera files against values read with exiftool, hostile EXIF."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import struct
import subprocess
import time
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import ExifTags, Image, features
from PIL.TiffImagePlugin import IFDRational

from shared.imagefile import register_decoders
from shared.photo_metadata import PhotoMetadata, read_metadata

WILD = Path(__file__).parent / "data" / "wild"
MTIME_NS = 1_590_998_400_123_456_789  # 2020-06-01 08:00:00.123456789 UTC
DATE_ORIGINAL, OFFSET_ORIGINAL, SUBSEC_ORIGINAL = 0x9003, 0x9011, 0x9291
DATE_DIGITIZED, OFFSET_DIGITIZED = 0x9004, 0x9012
DATE_TIME, OFFSET_TIME = 0x0132, 0x9010
MAKE, MODEL = 0x010F, 0x0110


@pytest.fixture(autouse=True)
def utc_machine():
    """Run as a machine in UTC (the mtime fallback is local time); `zone(tz)` changes it."""
    saved = os.environ.get("TZ")

    def zone(tz: str) -> None:
        os.environ["TZ"] = tz
        time.tzset()

    zone("UTC")
    yield zone
    if saved is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = saved
    time.tzset()


def read_file(path: Path | io.BytesIO, strict: bool = False) -> PhotoMetadata:
    """Open, decode and read a file the way sync does; strict turns warnings into errors."""
    register_decoders()
    with Image.open(path) as image:
        image.load()
        with warnings.catch_warnings():
            if strict:  # even a warning turned into an error must not escape read_metadata
                warnings.simplefilter("error")
            return read_metadata(image, MTIME_NS)


def in_memory(
    ifd0: dict | None = None, exif: dict | None = None, gps: dict | None = None
) -> Image.Image:
    """A 1x1 image whose EXIF holds exactly these values, of any Python type (nothing written)."""
    image = Image.new("RGB", (1, 1))
    tags = image.getexif()  # cached on the image: read_metadata sees these same objects
    tags.update(ifd0 or {})
    tags.get_ifd(ExifTags.IFD.Exif).update(exif or {})
    tags.get_ifd(ExifTags.IFD.GPSInfo).update(gps or {})
    return image


def jpeg_with(ifd0: dict | None = None, exif: dict | None = None, gps: dict | None = None) -> bytes:
    """JPEG bytes carrying these tags, as Pillow writes them."""
    block = in_memory(ifd0, exif, gps).getexif().tobytes()
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", exif=block)
    return out.getvalue()


def dms(degrees: int, minutes: int, hundredths_of_seconds: int) -> tuple[IFDRational, ...]:
    """A GPS coordinate as cameras write it: three rationals."""
    return IFDRational(degrees, 1), IFDRational(minutes, 1), IFDRational(hundredths_of_seconds, 100)


def assert_mtime_fallback(meta: PhotoMetadata) -> None:
    """taken_at is MTIME_NS in UTC (the test machine's zone), marked as a fallback."""
    assert meta.taken_at == datetime(2020, 6, 1, 8, 0, 0, 123456)
    assert meta.taken_offset_minutes == 0
    assert meta.taken_at_is_fallback


# ---- real files, values read with exiftool 12.57 (Debian libimage-exiftool-perl) by hand ----


def test_nikon_file_date_camera_and_gps():
    meta = read_file(WILD / "camera" / "DSCN0010.JPG")
    # exiftool: [ExifIFD] DateTimeOriginal 2008:10:22 16:28:39, no OffsetTimeOriginal, no SubSec;
    # [IFD0] Make "NIKON", Model "COOLPIX P6000" (each NUL-terminated in the file).
    assert meta.taken_at == datetime(2008, 10, 22, 16, 28, 39)
    assert meta.taken_offset_minutes is None
    assert not meta.taken_at_is_fallback
    assert (meta.camera_make, meta.camera_model) == ("NIKON", "COOLPIX P6000")
    assert meta.camera == "NIKON COOLPIX P6000"
    # exiftool -v3: GPSLatitudeRef N, GPSLatitude 43/1 28/1 281400000/100000000
    #   43 + 28/60 + 2.814/3600 = 43 + 0.4666666667 + 0.0007816667 = 43.4674483333
    # GPSLongitudeRef E, GPSLongitude 11/1 53/1 645599999/100000000
    #   11 + 53/60 + 6.45599999/3600 = 11 + 0.8833333333 + 0.0017933333 = 11.8851266667
    # (exiftool -n prints 43.4674483333333 and 11.8851266666639)
    assert meta.latitude == pytest.approx(43.4674483333, abs=1e-6)
    assert meta.longitude == pytest.approx(11.8851266667, abs=1e-6)


def test_canon_file_date_and_camera_without_gps():
    meta = read_file(WILD / "camera" / "canon_hdr_NO.jpg")
    # exiftool: DateTimeOriginal 2015:02:09 22:47:44 (ModifyDate 2015:02:26 04:20:03 is later and
    # must not win); Make "Canon", Model "Canon PowerShot SX60 HS"; a GPS IFD holding only
    # GPSVersionID, so no position.
    assert meta.taken_at == datetime(2015, 2, 9, 22, 47, 44)
    assert meta.taken_offset_minutes is None
    assert not meta.taken_at_is_fallback
    assert (meta.camera_make, meta.camera_model) == ("Canon", "Canon PowerShot SX60 HS")
    assert meta.camera == "Canon PowerShot SX60 HS"
    assert (meta.latitude, meta.longitude) == (None, None)


def test_mpo_file_camera_make_not_repeated():
    meta = read_file(WILD / "formats" / "sugarshack.mpo")
    # exiftool: DateTimeOriginal 2014:03:02 14:17:39, Make "Nintendo", Model "Nintendo 3DS".
    assert meta.taken_at == datetime(2014, 3, 2, 14, 17, 39)
    assert meta.camera == "Nintendo 3DS"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # exiftool: only [IFD0] ModifyDate (tag DateTime) 2012:01:09 22:52:11; no camera
        (
            "photos/2019 – Été à Crémieux/jour 2/Crémieux 11 (scan).tiff",
            datetime(2012, 1, 9, 22, 52, 11),
        ),
        # exiftool: only [IFD0] ModifyDate 2009:03:06 22:15:00 (the +01:00 is XMP's, not EXIF's)
        ("formats/pil_sample_cmyk.jpg", datetime(2009, 3, 6, 22, 15)),
    ],
)
def test_real_files_with_only_ifd0_datetime(name: str, expected: datetime):
    meta = read_file(WILD / name)
    assert meta.taken_at == expected
    assert meta.taken_offset_minutes is None
    assert not meta.taken_at_is_fallback
    assert meta.camera is None


@pytest.mark.parametrize("name", ["invalid-exif.jpg", "hopper_bad_exif.jpg"])
def test_hostile_exif_files_still_give_metadata(name: str):
    # exiftool: "Malformed APP1 EXIF segment" and "Bad IFD0 directory"; no EXIF date or camera.
    meta = read_file(WILD / "misc" / name, strict=True)
    assert_mtime_fallback(meta)
    assert (meta.camera, meta.latitude, meta.longitude) == (None, None, None)


@pytest.mark.parametrize(
    "name",
    [
        "photos/rocket.jpg",
        "photos/chelsea.png",
        "formats/example.heic",
        "formats/example.avif",
        "formats/iss634.webp",
        "formats/chi.gif",
    ],
)
def test_files_without_a_date_fall_back_to_mtime(name: str):
    # exiftool finds no EXIF date in these (chelsea.png's eXIf holds only Orientation).
    assert_mtime_fallback(read_file(WILD / name))


# ---- formats: one EXIF block written by Pillow / pillow-heif, read back ----

FORMATS = ["JPEG", "PNG", "WEBP", "TIFF", "HEIF"] + (["AVIF"] if features.check("avif") else [])
SUFFIXES = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "TIFF": "tiff",
    "HEIF": "heic",
    "AVIF": "avif",
}


def write_sample(tmp_path: Path, image_format: str) -> Path:
    """A small image in this format with a full EXIF block (values checked with exiftool)."""
    register_decoders()  # pillow-heif also registers the HEIF writer
    block = sample_exif_block()
    path = tmp_path / f"sample.{SUFFIXES[image_format]}"
    # Pillow's TIFF writer keeps the Exif and GPS sub-IFDs only when given EXIF as bytes.
    Image.new("RGB", (16, 16), (200, 100, 50)).save(path, image_format, exif=block)
    return path


def sample_exif_block() -> bytes:
    """A camera-like EXIF block: southern and western hemispheres, offset -05:00, subseconds."""
    return (
        in_memory(
            ifd0={MAKE: "FUJIFILM", MODEL: "X-T3", DATE_TIME: "2021:01:01 00:00:00"},
            exif={
                DATE_ORIGINAL: "2023:07:14 09:30:05",
                OFFSET_ORIGINAL: "-05:00",
                SUBSEC_ORIGINAL: "25",
            },
            gps={1: "S", 2: dms(33, 52, 3078), 3: "W", 4: dms(70, 40, 1234)},
        )
        .getexif()
        .tobytes()
    )


@pytest.mark.parametrize("image_format", FORMATS)
def test_each_format_gives_the_exif_values(tmp_path: Path, image_format: str):
    meta = read_file(write_sample(tmp_path, image_format))
    # exiftool on each written file (by hand): DateTimeOriginal 2023:07:14 09:30:05,
    # SubSecTimeOriginal 25, OffsetTimeOriginal -05:00, Make FUJIFILM, Model X-T3,
    # GPSLatitude -33.8752166666667 (33 + 52/60 + 30.78/3600, S),
    # GPSLongitude -70.6700944444444 (70 + 40/60 + 12.34/3600, W).
    assert meta.taken_at == datetime(2023, 7, 14, 9, 30, 5, 250000)
    assert meta.taken_offset_minutes == -300
    assert not meta.taken_at_is_fallback
    assert meta.camera == "FUJIFILM X-T3"
    assert meta.latitude == pytest.approx(-33.8752166667, abs=1e-6)
    assert meta.longitude == pytest.approx(-70.6700944444, abs=1e-6)


@pytest.mark.skipif(shutil.which("exiftool") is None, reason="exiftool not installed")
@pytest.mark.parametrize("image_format", FORMATS)
def test_agrees_with_exiftool_where_installed(tmp_path: Path, image_format: str):
    paths = [write_sample(tmp_path, image_format), WILD / "camera" / "DSCN0010.JPG"]
    for path in paths:
        meta = read_file(path)
        fields = ["-DateTimeOriginal", "-Make", "-Model", "-GPSLatitude", "-GPSLongitude"]
        out = subprocess.run(
            ["exiftool", "-j", "-n", *fields, str(path)], capture_output=True, check=True, text=True,
            timeout=60,
        ).stdout
        truth = json.loads(out)[0]
        assert meta.taken_at.replace(microsecond=0) == datetime.strptime(
            truth["DateTimeOriginal"], "%Y:%m:%d %H:%M:%S"
        )
        assert (meta.camera_make, meta.camera_model) == (truth["Make"], truth["Model"])
        assert meta.latitude == pytest.approx(truth["GPSLatitude"], abs=1e-6)
        assert meta.longitude == pytest.approx(truth["GPSLongitude"], abs=1e-6)


# ---- dates ----


@pytest.mark.parametrize(
    "value",
    [
        "0000:00:00 00:00:00",
        "    :  :     :  :  ",
        "",
        b"\x00" * 20,
        "2023:02:30 10:00:00",
        "2023:07:14 25:00:00",
        "1799:12:31 23:59:59",
        "2201:01:01 00:00:00",
        "2023:07:14",
        "yesterday",
        "２０２３:07:14 09:30:05",
        20230714,
        ("2023:07:14 09:30:05",),
    ],
)
def test_garbage_dates_fall_back_to_mtime(value: Any):
    assert_mtime_fallback(read_metadata(in_memory(exif={DATE_ORIGINAL: value}), MTIME_NS))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2023-07-14 09:30:05", datetime(2023, 7, 14, 9, 30, 5)),
        ("2023:07:14 09:30:05\x00\x00  ", datetime(2023, 7, 14, 9, 30, 5)),
        (b"2023:07:14 09:30:05\x00", datetime(2023, 7, 14, 9, 30, 5)),
        ("1800:01:01 00:00:00", datetime(1800, 1, 1)),
    ],
)
def test_tolerated_date_spellings(value: Any, expected: datetime):
    meta = read_metadata(in_memory(exif={DATE_ORIGINAL: value}), MTIME_NS)
    assert (meta.taken_at, meta.taken_at_is_fallback) == (expected, False)


def test_bad_original_date_falls_to_digitized_with_its_own_offset():
    image = in_memory(
        exif={
            DATE_ORIGINAL: "0000:00:00 00:00:00",
            OFFSET_ORIGINAL: "+09:00",
            DATE_DIGITIZED: "2019:12:31 23:59:59",
            OFFSET_DIGITIZED: "+01:00",
        }
    )
    meta = read_metadata(image, MTIME_NS)
    assert (meta.taken_at, meta.taken_offset_minutes) == (datetime(2019, 12, 31, 23, 59, 59), 60)


def test_bad_original_and_digitized_fall_to_datetime_with_its_own_offset():
    image = in_memory(
        ifd0={DATE_TIME: "2018:03:04 05:06:07"},
        exif={
            DATE_ORIGINAL: "bad",
            DATE_DIGITIZED: "2018:02:30 00:00:00",
            OFFSET_TIME: "-03:30",
            OFFSET_DIGITIZED: "+01:00",
        },
    )
    meta = read_metadata(image, MTIME_NS)
    assert (meta.taken_at, meta.taken_offset_minutes) == (datetime(2018, 3, 4, 5, 6, 7), -210)
    assert not meta.taken_at_is_fallback


def test_original_date_wins_over_a_later_datetime():
    image = in_memory(
        ifd0={DATE_TIME: "2024:01:01 00:00:00"}, exif={DATE_ORIGINAL: "2023:07:14 09:30:05"}
    )
    assert read_metadata(image, MTIME_NS).taken_at == datetime(2023, 7, 14, 9, 30, 5)


@pytest.mark.parametrize(
    ("offset", "minutes"),
    [
        ("+02:00", 120),
        ("-07:00", -420),
        ("+05:45", 345),
        ("+14:00", 840),
        ("-12:00", -720),
        (b"+09:30\x00", 570),
        ("+0100", 60),
        ("+14:01", None),
        ("+15:00", None),
        ("+02:75", None),
        ("   :  ", None),
        ("garbage", None),
        ("", None),
        (120, None),
    ],
)
def test_offsets_recorded_and_validated(offset: Any, minutes: int | None):
    image = in_memory(exif={DATE_ORIGINAL: "2023:07:14 09:30:05", OFFSET_ORIGINAL: offset})
    meta = read_metadata(image, MTIME_NS)
    assert meta.taken_at == datetime(2023, 7, 14, 9, 30, 5)  # wall-clock time, never shifted
    assert meta.taken_offset_minutes == minutes


@pytest.mark.parametrize(("subsec", "micro"), [("5", 500000), ("0123456789", 12345), ("x", 0)])
def test_subseconds(subsec: str, micro: int):
    image = in_memory(exif={DATE_ORIGINAL: "2023:07:14 09:30:05", SUBSEC_ORIGINAL: subsec})
    assert read_metadata(image, MTIME_NS).taken_at.microsecond == micro


def test_mtime_fallback_is_local_wall_clock_with_its_offset(utc_machine):
    utc_machine("XST-5:30")  # POSIX TZ: UTC+05:30, no zone database needed
    meta = read_metadata(Image.new("RGB", (1, 1)), MTIME_NS)
    assert meta.taken_at == datetime(2020, 6, 1, 13, 30, 0, 123456)
    assert (meta.taken_offset_minutes, meta.taken_at_is_fallback) == (330, True)


def test_mtime_fallback_offset_follows_daylight_saving(utc_machine):
    utc_machine("CET-1CEST,M3.5.0,M10.5.0/3")
    winter = read_metadata(Image.new("RGB", (1, 1)), 1_577_880_000 * 10**9)  # 2020-01-01 12:00Z
    summer = read_metadata(Image.new("RGB", (1, 1)), MTIME_NS)
    assert (winter.taken_at, winter.taken_offset_minutes) == (datetime(2020, 1, 1, 13, 0), 60)
    assert summer.taken_at.hour == 10
    assert summer.taken_offset_minutes == 120


@pytest.mark.parametrize("mtime_ns", [10**30, -(10**30)])
def test_unshowable_mtime_does_not_raise(mtime_ns: int):
    meta = read_metadata(Image.new("RGB", (1, 1)), mtime_ns)
    assert meta.taken_at_is_fallback


# ---- camera ----


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"Canon\x00\x00\x00", "Canon"),
        ("  NIKON CORPORATION \x00", "NIKON CORPORATION"),
        ("NIKON\x00junk after the terminator", "NIKON"),
        ("Can\x07on\x1b", "Canon"),
        (b"Caf\xe9 Cam", "Caf\xe9 Cam"),  # not UTF-8: read as Latin-1
        ("Sony".ljust(100), "Sony"),
        ("x" * 100, "x" * 100),
        ("x" * 101, None),
        ("A" * 100_000, None),
        (b"\x00" * 16, None),
        ("   ", None),
        (42, None),
        ((b"Canon",), None),
    ],
)
def test_camera_text_is_cleaned(value: Any, expected: str | None):
    meta = read_metadata(in_memory(ifd0={MAKE: value, MODEL: value}), MTIME_NS)
    assert (meta.camera_make, meta.camera_model) == (expected, expected)


@pytest.mark.parametrize(
    ("make", "model", "camera"),
    [
        ("Canon", "Canon EOS 40D", "Canon EOS 40D"),
        ("NIKON CORPORATION", "NIKON D750", "NIKON D750"),
        ("LG Electronics", "LG-H870", "LG-H870"),
        ("FUJIFILM", "FUJIFILM", "FUJIFILM"),
        ("Canon", "Canonet QL17", "Canon Canonet QL17"),  # a word that only starts like the make
        ("Apple", "iPhone 12", "Apple iPhone 12"),
        ("NIKON", "COOLPIX P6000", "NIKON COOLPIX P6000"),
        (None, "X-T3", "X-T3"),
        ("FUJIFILM", None, "FUJIFILM"),
        (None, None, None),
    ],
)
def test_camera_joins_make_and_model(make: str | None, model: str | None, camera: str | None):
    meta = PhotoMetadata(datetime(2020, 1, 1), None, False, camera_make=make, camera_model=model)
    assert meta.camera == camera


# ---- GPS ----

SANTIAGO = {1: "S", 2: dms(33, 52, 3078), 3: "W", 4: dms(70, 40, 1234)}


def position(gps: dict) -> tuple[float | None, float | None]:
    meta = read_metadata(in_memory(gps=gps), MTIME_NS)
    return meta.latitude, meta.longitude


@pytest.mark.parametrize(
    ("lat_ref", "lon_ref", "signs"),
    [
        ("N", "E", (1, 1)),
        ("S", "W", (-1, -1)),
        ("N", "W", (1, -1)),
        (b"S\x00", b"E\x00", (-1, 1)),
        ("s ", "e", (-1, 1)),
    ],
)
def test_gps_refs_give_the_signs(lat_ref: Any, lon_ref: Any, signs: tuple[int, int]):
    lat, lon = position({**SANTIAGO, 1: lat_ref, 3: lon_ref})
    assert lat == pytest.approx(signs[0] * 33.8752166667, abs=1e-9)
    assert lon == pytest.approx(signs[1] * 70.6700944444, abs=1e-9)


@pytest.mark.parametrize(
    "value",
    [
        ((33, 1), (52, 1), (3078, 100)),  # rationals as (numerator, denominator) pairs
        (33.0, 52.0, 30.78),  # plain floats
        (33, 52.513),  # degrees and decimal minutes
        (33.8752166667,),  # decimal degrees
    ],
)
def test_gps_number_shapes(value: Any):
    lat, _ = position({**SANTIAGO, 2: value})
    assert lat == pytest.approx(-33.8752166667, abs=1e-6)


@pytest.mark.parametrize(
    "changes",
    [
        {2: (IFDRational(33, 1), IFDRational(52, 0), IFDRational(3078, 100))},  # zero denominator
        {2: ((33, 1), (52, 0), (3078, 100))},  # zero denominator as a pair
        {2: (float("nan"), 0.0, 0.0)},
        {2: (float("inf"), 0.0, 0.0)},
        {2: dms(200, 0, 0)},  # latitude 200
        {2: dms(90, 0, 1)},  # just over the pole
        {4: dms(181, 0, 0)},  # longitude 181
        {2: dms(33, 75, 0)},  # 75 minutes
        {2: (-33.0, 52.0, 30.78)},  # negative: the ref carries the sign
        {2: ()},
        {2: (1, 2, 3, 4)},
        {2: "33 52 30.78"},
        {2: None},
        {1: None},  # no latitude ref: absent rather than guessed
        {3: ""},
        {1: "X"},
        {3: "N"},  # a latitude ref on the longitude
        {1: "N", 2: dms(0, 0, 0), 3: "E", 4: dms(0, 0, 0)},  # (0, 0): a GPS without a fix
    ],
)
def test_gps_garbage_gives_no_position(changes: dict):
    assert position({**SANTIAGO, **changes}) == (None, None)


def test_gps_on_equator_or_meridian_alone_is_kept():
    assert position({**SANTIAGO, 2: dms(0, 0, 0)}) == (0, pytest.approx(-70.6700944444))


# ---- hostile EXIF written into real files ----


def test_hostile_values_written_into_a_jpeg():
    data = jpeg_with(
        ifd0={MAKE: b"Canon\x00\x00\x00", MODEL: "A" * 5000},
        exif={DATE_ORIGINAL: "0000:00:00 00:00:00", OFFSET_ORIGINAL: "+99:99"},
        gps={
            1: "N",
            2: (IFDRational(33, 1), IFDRational(52, 0), IFDRational(3078, 100)),
            3: "E",
            4: dms(200, 0, 0),
        },
    )
    meta = read_file(io.BytesIO(data))
    assert_mtime_fallback(meta)
    assert (meta.camera_make, meta.camera_model) == ("Canon", None)
    assert (meta.latitude, meta.longitude) == (None, None)


def tiff_block(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
    """Raw little-endian EXIF: IFD0 at offset 8 with these (tag, type, count, value) entries."""
    ifd = struct.pack("<H", len(entries))
    ifd += b"".join(struct.pack("<HHII", *entry) for entry in entries)
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", next_ifd)


HOSTILE_BLOCKS = {
    "sub-IFD pointers out of the file": tiff_block(
        [(0x8769, 4, 1, 0xFFFFFF00), (0x8825, 4, 1, 0xFFFFFF00)]
    ),
    "sub-IFD pointers back to IFD0": tiff_block([(0x8769, 4, 1, 8), (0x8825, 4, 1, 8)], 8),
    "make with a huge count": tiff_block([(MAKE, 2, 0x7FFFFFFF, 16)]),
    "GPS pointer of the wrong type": tiff_block([(0x8825, 2, 4, 0x41414141)]),
    "truncated header": b"Exif\x00\x00II*\x00\x08",
    "not TIFF at all": b"Exif\x00\x00" + b"\xff" * 64,
    "random bytes": b"Exif\x00\x00II*\x00\x08\x00\x00\x00" + random.Random(0).randbytes(400),
}


@pytest.mark.parametrize("block", HOSTILE_BLOCKS.values(), ids=HOSTILE_BLOCKS.keys())
def test_hostile_exif_blocks_in_a_jpeg_still_give_metadata(block: bytes):
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "JPEG", exif=block)
    meta = read_file(out, strict=True)
    assert meta.taken_at_is_fallback
    assert (meta.latitude, meta.longitude) == (None, None)


class Exploding(Image.Image):
    """An image whose EXIF cannot be read at all."""

    def getexif(self) -> Image.Exif:
        raise RuntimeError("boom")


def test_an_exploding_getexif_gives_the_fallback():
    assert_mtime_fallback(read_metadata(Exploding(), MTIME_NS))
