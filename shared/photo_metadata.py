"""Date taken, camera and GPS position of a photo, read from the EXIF of an opened Pillow image.

Works for every format whose EXIF Pillow exposes through `getexif()`: JPEG/MPO, TIFF, WebP,
PNG `eXIf`, AVIF, and HEIF once `shared.imagefile.register_decoders()` has run. Broken or
hostile EXIF never raises: the value it should have given is absent, and the date falls back to
the file's modification time.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from PIL import ExifTags, Image

MAKE, MODEL, DATE_TIME = 0x010F, 0x0110, 0x0132
# (date tag, its UTC offset tag, its sub-second tag), best first.
DATE_TAGS = (
    (0x9003, 0x9011, 0x9291),  # DateTimeOriginal, OffsetTimeOriginal, SubSecTimeOriginal
    (0x9004, 0x9012, 0x9292),  # DateTimeDigitized, OffsetTimeDigitized, SubSecTimeDigitized
    (DATE_TIME, 0x9010, 0x9290),  # DateTime, OffsetTime, SubSecTime
)
GPS_LAT_REF, GPS_LAT, GPS_LON_REF, GPS_LON = 1, 2, 3, 4
# What the stored values were read with: raise it when read_metadata learns to read more, and
# the next `loader sync` reads every file again (without re-uploading or re-embedding it).
METADATA_VERSION = 1
MAX_TEXT = 100
YEARS = range(1800, 2201)
MAX_OFFSET_MINUTES = 14 * 60
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_DATE = re.compile(r"(\d{4})[:-](\d\d)[:-](\d\d)[ T](\d\d):(\d\d):(\d\d)", re.ASCII)
_OFFSET = re.compile(r"([+-])(\d\d):?(\d\d)", re.ASCII)
_T = TypeVar("_T")


@dataclass(frozen=True)
class PhotoMetadata:
    """What a photo says about itself; None where it says nothing usable."""

    taken_at: datetime  # naive wall-clock time, as the camera (or the file's mtime) recorded it
    taken_offset_minutes: int | None  # UTC offset of taken_at, when known
    taken_at_is_fallback: bool  # True when taken_at is the file's modification time
    camera_make: str | None = None
    camera_model: str | None = None
    latitude: float | None = None  # signed decimal degrees, north positive
    longitude: float | None = None  # signed decimal degrees, east positive

    @property
    def camera(self) -> str | None:
        """Make and model for display, without repeating the make ("Canon EOS 40D")."""
        make, model = self.camera_make, self.camera_model
        if not make or not model:
            return make or model
        brand, name = (make.split() or [""])[0].casefold(), model.casefold()
        if brand and name.startswith(brand) and not name[len(brand) : len(brand) + 1].isalnum():
            return model  # "Canon" + "Canon EOS 40D", "NIKON CORPORATION" + "NIKON D750"
        return f"{make} {model}"


def read_metadata(image: Image.Image, mtime_ns: int) -> PhotoMetadata:
    """Read date taken, camera and GPS from an opened image; never raises.

    Call it after `image.load()`: a PNG whose eXIf chunk follows the pixels is decoded to
    find it otherwise.
    """
    tags, gps = _read_tags(image)
    taken = _guard(_exif_date, tags)
    if taken is None:
        taken_at, offset = _mtime_date(mtime_ns)
    else:
        taken_at, offset = taken
    position = _guard(_gps_position, gps)
    return PhotoMetadata(
        taken_at=taken_at,
        taken_offset_minutes=offset,
        taken_at_is_fallback=taken is None,
        camera_make=_guard(_clean_text, tags.get(MAKE)),
        camera_model=_guard(_clean_text, tags.get(MODEL)),
        latitude=position[0] if position else None,
        longitude=position[1] if position else None,
    )


def fallback_metadata(mtime_ns: int) -> PhotoMetadata:
    """What a file that cannot be opened says: its modification time, nothing else."""
    taken_at, offset = _mtime_date(mtime_ns)
    return PhotoMetadata(taken_at=taken_at, taken_offset_minutes=offset, taken_at_is_fallback=True)


def _guard(read: Callable[..., _T | None], *args: Any) -> _T | None:
    """read(*args), or None when hostile data makes it fail in any way."""
    try:
        return read(*args)
    except Exception:  # noqa: BLE001 - hostile EXIF can raise anything; the value is then absent
        return None


def _read_tags(image: Image.Image) -> tuple[dict[int, Any], dict[int, Any]]:
    """(IFD0 and Exif IFD tags merged, GPS IFD tags); each part empty when unreadable."""
    exif = _guard(image.getexif)
    if exif is None:
        return {}, {}
    # Some writers put Exif-IFD tags in IFD0: read them there too; the Exif IFD wins over it.
    tags = {tag: _guard(exif.get, tag) for tag in (MAKE, MODEL, *sum(DATE_TAGS, ()))}
    tags.update(_guard(exif.get_ifd, ExifTags.IFD.Exif) or {})
    return tags, _guard(exif.get_ifd, ExifTags.IFD.GPSInfo) or {}


def _exif_date(tags: dict[int, Any]) -> tuple[datetime, int | None] | None:
    """The first valid date of DATE_TAGS, with the UTC offset recorded beside it."""
    for date_tag, offset_tag, subsec_tag in DATE_TAGS:
        taken = _guard(_parse_date, tags.get(date_tag))
        if taken is not None:
            fraction = _guard(_parse_subseconds, tags.get(subsec_tag)) or 0
            return taken.replace(microsecond=fraction), _guard(_parse_offset, tags.get(offset_tag))
    return None


def _parse_date(value: Any) -> datetime | None:
    """An EXIF "YYYY:MM:DD HH:MM:SS" (or with dashes) within YEARS; None for blanks and zeros."""
    match = _DATE.fullmatch(_as_str(value).strip("\x00 "))
    if match is None or int(match[1]) not in YEARS:
        return None
    return datetime(*map(int, match.groups()))  # ValueError for impossible dates


def _parse_subseconds(value: Any) -> int | None:
    """EXIF SubSecTime digits ("25" = 0.25 s) as microseconds."""
    digits = _as_str(value).strip("\x00 ")
    return int(digits[:6].ljust(6, "0")) if digits.isdigit() and digits.isascii() else None


def _parse_offset(value: Any) -> int | None:
    """An EXIF OffsetTime such as "+02:00" as minutes east of UTC, within ±14 h."""
    match = _OFFSET.fullmatch(_as_str(value).strip("\x00 "))
    if match is None or int(match[3]) >= 60:
        return None
    minutes = int(match[2]) * 60 + int(match[3])
    return (-minutes if match[1] == "-" else minutes) if minutes <= MAX_OFFSET_MINUTES else None


def _mtime_date(mtime_ns: int) -> tuple[datetime, int | None]:
    """The modification time as this machine's local wall-clock time, with its UTC offset."""
    try:
        local = (EPOCH + timedelta(microseconds=mtime_ns // 1000)).astimezone()
    except (OverflowError, OSError, ValueError):  # which one depends on the platform
        return EPOCH.replace(tzinfo=None), 0  # an mtime no clock can show: the epoch, in UTC
    offset = local.utcoffset()
    minutes = round(offset.total_seconds() / 60) if offset is not None else None
    return local.replace(tzinfo=None), minutes


def _clean_text(value: Any) -> str | None:
    """A make or model: cut at a NUL, printable characters only, trimmed; None if over MAX_TEXT."""
    text = _as_str(value).strip("\x00 \t\r\n").split("\x00", 1)[0]
    text = "".join(ch for ch in text if ch.isprintable()).strip()
    return text if 0 < len(text) <= MAX_TEXT else None  # longer is garbage, not a name


def _as_str(value: Any) -> str:
    """A str or bytes tag value as str ("" for any other type)."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value.decode("latin-1")
    return value if isinstance(value, str) else ""


def _gps_position(gps: dict[int, Any]) -> tuple[float, float] | None:
    """(latitude, longitude) in signed decimal degrees, or None unless both are plausible.

    A missing or unknown N/S/E/W reference makes the position absent rather than guessed: a
    wrong sign would put the photo in another hemisphere.
    """
    lat = _degrees(gps.get(GPS_LAT), gps.get(GPS_LAT_REF), "N", "S", 90)
    lon = _degrees(gps.get(GPS_LON), gps.get(GPS_LON_REF), "E", "W", 180)
    if lat is None or lon is None or (lat == 0 and lon == 0):
        return None  # (0, 0) is what a GPS without a fix writes
    return lat, lon


def _degrees(value: Any, ref: Any, positive: str, negative: str, limit: float) -> float | None:
    """EXIF degrees/minutes/seconds and a reference letter as signed decimal degrees."""
    sign = {positive: 1, negative: -1}.get(_as_str(ref).strip("\x00 ").upper())
    parts = value if isinstance(value, (tuple, list)) else (value,)
    if sign is None or not 1 <= len(parts) <= 3:
        return None
    numbers = [_number(part) for part in parts]
    # NaN (an n/0 rational) fails every comparison, so it is refused here too.
    if not all(n >= 0 for n in numbers) or not all(n <= 60 for n in numbers[1:]):
        return None
    degrees = sum(n / 60**i for i, n in enumerate(numbers))
    return sign * degrees if degrees <= limit else None


def _number(value: Any) -> float:
    """An IFDRational, (numerator, denominator) pair or number as float; NaN for n/0."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        numerator, denominator = map(float, value)
        return numerator / denominator if denominator else math.nan
    return float(value)  # IFDRational n/0 is NaN already; garbage raises, and _guard catches it
