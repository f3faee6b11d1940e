"""Read one image file: its hash, its size as displayed, a decode check and a thumbnail."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .dimensions import display_size, pillow_orientation
from .photo_metadata import PhotoMetadata, fallback_metadata, read_metadata

THUMBNAIL_EDGE = 512
THUMBNAIL_QUALITY = 80
BACKGROUND = (255, 255, 255)  # what transparent pixels become
IMAGE_SUFFIXES = frozenset(
    ".jpg .jpeg .jpe .jfif .png .apng .gif .webp .tif .tiff .bmp .dib .heic .heif .hif .avif "
    ".ico .mpo .jp2 .j2k .tga .ppm .pgm .pbm .pnm .psd .qoi".split()
)

# EXIF orientation -> the transpose that shows the picture upright.
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_opener_registered = False


# Formats a browser or an embedder can reasonably take from an upload (checked by content).
UPLOAD_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"})


class ImageProblem(Exception):
    """The file is not a usable image; the message says why, for a user to read.

    `kind` tells callers what sort of problem it is: "empty", "not_image", "unreadable"
    (corrupt), "too_large" (too many pixels), or "format" (an image of a refused format).
    """

    def __init__(self, message: str, kind: str = "unreadable") -> None:
        super().__init__(message)
        self.kind = kind


@contextmanager
def pillow_errors(what: str = "cannot decode"):
    """Turn the many exceptions Pillow raises on bad data into one ImageProblem."""
    try:
        yield
    except ImageProblem:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageProblem(f"refused as a decompression bomb: {exc}", "too_large") from None
    except UnidentifiedImageError:
        raise ImageProblem("not an image Pillow can read (unknown or corrupt format)",
                           "not_image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageProblem(f"{what}: {exc}") from None


@dataclass(frozen=True)
class Inspection:
    """What one file turned out to be."""

    sha256: str
    byte_size: int
    width: int = 0
    height: int = 0
    format: str = ""
    content_type: str = "application/octet-stream"
    thumbnail: bytes | None = None
    unchanged: bool = False  # the hash matched what the database already has
    metadata: PhotoMetadata | None = None  # date taken, camera, position


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (the content is checked later)."""
    # os.path.splitext's rule (leading dots are not a suffix), without its cost: a sync of
    # 200,000 unchanged files asks this 200,000 times.
    dot = name.rfind(".")
    return dot > 0 and name[:dot].lstrip(".") != "" and name[dot:].lower() in IMAGE_SUFFIXES


def register_decoders() -> None:
    """Teach Pillow HEIF, and keep quiet about broken EXIF blocks (once per process).

    Broken EXIF blocks are common in real photos and harmless to the pixels; Pillow's warning
    names no file and would break into progress bars.
    """
    global _opener_registered
    if not _opener_registered:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        warnings.filterwarnings("ignore", message="Corrupt EXIF data", category=UserWarning)
        _opener_registered = True


def prepare_decoders(max_pixels: int) -> None:
    """register_decoders(), and make oversized images an error rather than a warning."""
    register_decoders()
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def inspect_image(
    path: Path, max_pixels: int, known_sha256: str | None = None, thumbnail: bool = True,
    mtime_ns: int | None = None,
) -> Inspection:
    """Hash, measure, decode-check, thumbnail and read the metadata of one file; raise
    ImageProblem if unusable. An unchanged file (its hash is `known_sha256`) is only hashed and
    its metadata read. `mtime_ns` stands in for a date taken the file does not hold."""
    prepare_decoders(max_pixels)
    try:
        data = Path(path).read_bytes()
        mtime_ns = os.stat(path).st_mtime_ns if mtime_ns is None else mtime_ns
    except OSError as exc:
        raise ImageProblem(f"cannot read file: {exc.strerror}") from exc
    if not data:
        raise ImageProblem("empty file (0 bytes)", "empty")
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 == known_sha256:
        return Inspection(sha256=sha256, byte_size=len(data), unchanged=True,
                          metadata=photo_metadata(io.BytesIO(data), mtime_ns))
    with pillow_errors("unreadable image header"):
        width, height = display_size(io.BytesIO(data))
    if width * height > max_pixels:
        raise ImageProblem(
            f"refused as a decompression bomb: {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} (MAX_IMAGE_PIXELS)", "too_large"
        )
    image_format, thumb, metadata = _decode(data, thumbnail, mtime_ns)
    return Inspection(
        sha256=sha256,
        byte_size=len(data),
        width=width,
        height=height,
        format=image_format,
        content_type=content_type(image_format),
        thumbnail=thumb,
        metadata=metadata,
    )


def photo_metadata(source: Path | io.BytesIO, mtime_ns: int) -> PhotoMetadata:
    """Date taken, camera and position of a file already accepted once; never raises.

    Most formats keep their EXIF in the header, so nothing is decoded; Pillow decodes a PNG
    whose eXIf chunk follows its pixels by itself when asked for it (tests/test_loader_sync.py
    holds such a file). A file that no longer opens gets its modification time.
    """
    try:
        with pillow_errors(), Image.open(source) as image:
            return read_metadata(image, mtime_ns)
    except (ImageProblem, OSError):
        return fallback_metadata(mtime_ns)


def _decode(data: bytes, thumbnail: bool, mtime_ns: int) -> tuple[str, bytes | None, PhotoMetadata]:
    """Decode the first frame at reduced size where the format allows; make a thumbnail; read
    the metadata (after decoding: a PNG's eXIf chunk may follow the pixels)."""
    with pillow_errors(), Image.open(io.BytesIO(data)) as image:
        image_format = image.format or "unknown"
        w, h = image.size
        scale = THUMBNAIL_EDGE / max(w, h)
        if scale < 1 and image_format in ("JPEG", "MPO"):
            # JPEG decodes at 1/2, 1/4 or 1/8 size: the whole file is still read and checked.
            image.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
        image.load()
        thumb = make_thumbnail(image) if thumbnail else None
        metadata = read_metadata(image, mtime_ns)
    return image_format, thumb, metadata


def check_upload(data: bytes, max_pixels: int, max_decoded_pixels: int) -> str:
    """The format of an uploaded image, checked by decoding it; raises ImageProblem.

    JPEGs are decoded at 1/8 size (every block is still read and checked), so memory stays
    small for any photo; other formats decode whole, so their pixels must fit
    `max_decoded_pixels` (their header says how many before anything is decoded).
    """
    if not data:
        raise ImageProblem("the upload is empty: choose an image file", "empty")
    prepare_decoders(max_pixels)
    with pillow_errors("the image cannot be decoded"), Image.open(io.BytesIO(data)) as image:
        image_format = image.format or ""
        if image_format not in UPLOAD_FORMATS:
            raise ImageProblem(f"{image_format or 'this'} images are not accepted", "format")
        width, height = image.size
        if image_format in ("JPEG", "MPO"):
            image.draft(image.mode, (1, 1))  # the largest reduction the decoder offers
        if image.width * image.height > max_decoded_pixels:
            raise ImageProblem(f"the image is too large ({width}x{height} pixels; at most "
                               f"{max_decoded_pixels:,} can be searched with)", "too_large")
        image.load()
    return image_format


def content_type(image_format: str) -> str:
    """The MIME type browsers know for a Pillow format name (MPO is served as the JPEG it is)."""
    register_decoders()
    Image.init()  # Image.MIME fills in as plugins load: load them all before asking
    if image_format.upper() == "MPO":
        return "image/jpeg"
    return Image.MIME.get(image_format.upper(), "application/octet-stream")


def make_thumbnail(image: Image.Image) -> bytes:
    """A JPEG of about THUMBNAIL_EDGE px on the long side, upright, on white where transparent."""
    image.load()  # first: a decoder may turn the pixels itself, and then drops the tag
    orientation = pillow_orientation(image)
    rgb = to_rgb(image)
    # After the reduced-size decode the shrink left is under 2x; area averaging (BOX) looks as
    # good as bicubic there at less than half the cost, and the resize is most of sync's work
    # beyond the decode (docs/benchmarks.md).
    rgb.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.BOX)
    if orientation in UPRIGHT:
        rgb = rgb.transpose(UPRIGHT[orientation])
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB for any mode: high-bit greyscale scaled, transparency composited onto white."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High-bit-depth greyscale: scale by the brightest pixel, not by 2**16, or 12-bit scans go black.
        pixels = np.asarray(image, dtype=np.float32)
        peak = float(pixels.max()) or 1.0
        image = Image.fromarray((pixels * (255.0 / peak)).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        # alpha_composite gives the same values as transformers' CLIP preprocessing.
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")
