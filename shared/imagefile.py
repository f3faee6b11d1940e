"""Read one image file: its hash, its size as displayed, a decode check and a thumbnail."""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .dimensions import display_size, pillow_orientation

THUMBNAIL_EDGE = 512
THUMBNAIL_QUALITY = 80
THUMBNAIL_BACKGROUND = (255, 255, 255)
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


class ImageProblem(Exception):
    """The file is not a usable image; the message says why, for a user to read."""


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


def is_image_name(name: str) -> bool:
    """Whether a file name has an image extension (the content is checked later)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


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
    path: Path, max_pixels: int, known_sha256: str | None = None, thumbnail: bool = True
) -> Inspection:
    """Hash, measure, decode-check and thumbnail one file; raise ImageProblem if unusable."""
    prepare_decoders(max_pixels)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageProblem(f"cannot read file: {exc.strerror}") from exc
    if not data:
        raise ImageProblem("empty file (0 bytes)")
    sha256 = hashlib.sha256(data).hexdigest()
    if sha256 == known_sha256:
        return Inspection(sha256=sha256, byte_size=len(data), unchanged=True)
    try:
        width, height = display_size(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageProblem("not an image Pillow can read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageProblem(f"unreadable image header: {exc}") from None
    if width * height > max_pixels:
        raise ImageProblem(
            f"refused as a decompression bomb: {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,} (MAX_IMAGE_PIXELS)"
        )
    image_format, thumb = _decode(data, thumbnail)
    return Inspection(
        sha256=sha256,
        byte_size=len(data),
        width=width,
        height=height,
        format=image_format,
        content_type=Image.MIME.get(image_format, "application/octet-stream"),
        thumbnail=thumb,
    )


def _decode(data: bytes, thumbnail: bool) -> tuple[str, bytes | None]:
    """Decode the first frame at reduced size where the format allows; make a thumbnail."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format or "unknown"
            w, h = image.size
            scale = THUMBNAIL_EDGE / max(w, h)
            if scale < 1 and image_format in ("JPEG", "MPO"):
                # JPEG decodes at 1/2, 1/4 or 1/8 size: the whole file is still read and checked.
                image.draft("RGB", (max(1, int(w * scale)), max(1, int(h * scale))))
            image.load()
            thumb = make_thumbnail(image) if thumbnail else None
    except Image.DecompressionBombError as exc:
        raise ImageProblem(f"refused as a decompression bomb: {exc}") from None
    except Image.DecompressionBombWarning as exc:
        raise ImageProblem(f"refused as a decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageProblem("not an image Pillow can read (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageProblem(f"cannot decode: {exc}") from None
    return image_format, thumb


def make_thumbnail(image: Image.Image) -> bytes:
    """A JPEG of about THUMBNAIL_EDGE px on the long side, upright, on white where transparent."""
    orientation = pillow_orientation(image)
    rgb = _to_rgb(image)
    # After the reduced-size decode the shrink left is under 2x; area averaging (BOX) looks as
    # good as bicubic there at less than half the cost, and the resize is most of sync's work
    # beyond the decode (docs/benchmarks.md).
    rgb.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), Image.Resampling.BOX)
    if orientation in UPRIGHT:
        rgb = rgb.transpose(UPRIGHT[orientation])
    out = io.BytesIO()
    rgb.save(out, "JPEG", quality=THUMBNAIL_QUALITY)
    return out.getvalue()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # High-bit-depth greyscale: scale by the brightest pixel, not by 2**16, or 12-bit scans go black.
        pixels = np.asarray(image, dtype=np.float32)
        peak = float(pixels.max()) or 1.0
        image = Image.fromarray((pixels * (255.0 / peak)).clip(0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, THUMBNAIL_BACKGROUND)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")
