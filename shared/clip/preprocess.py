"""Image preprocessing that matches transformers' CLIPImageProcessor value for value."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from shared.imagefile import register_decoders, to_rgb

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class PreprocessConfig:
    """Resize, crop and normalisation settings (preprocessor_config.json's fields)."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    std: tuple[float, float, float] = OPENAI_CLIP_STD
    resample: int = int(Image.Resampling.BICUBIC)

    @classmethod
    def for_checkpoint(cls, folder: Path, image_size: int) -> PreprocessConfig:
        """Read preprocessor_config.json if present, else CLIP's defaults at the model's size."""
        path = Path(folder) / "preprocessor_config.json"
        if not path.is_file():
            return cls(shortest_edge=image_size, crop_height=image_size, crop_width=image_size)
        raw = json.loads(path.read_text(encoding="utf-8"))
        size, crop = raw.get("size", image_size), raw.get("crop_size", image_size)
        shortest = size.get("shortest_edge", image_size) if isinstance(size, dict) else int(size)
        crop_h, crop_w = (
            (crop.get("height", image_size), crop.get("width", image_size))
            if isinstance(crop, dict)
            else (int(crop), int(crop))
        )
        return cls(
            shortest_edge=int(shortest),
            crop_height=int(crop_h),
            crop_width=int(crop_w),
            mean=tuple(raw.get("image_mean", OPENAI_CLIP_MEAN)),
            std=tuple(raw.get("image_std", OPENAI_CLIP_STD)),
            resample=int(raw.get("resample", Image.Resampling.BICUBIC)),
        )


def decode(data: bytes) -> Image.Image:
    """Open image bytes (HEIC too) and turn them upright according to their EXIF orientation."""
    register_decoders()
    image = Image.open(io.BytesIO(data))
    image.load()
    return ImageOps.exif_transpose(image)


def resized_size(width: int, height: int, shortest_edge: int) -> tuple[int, int]:
    """(width, height) with the short side at `shortest_edge`, the long side truncated."""
    if width <= height:
        return shortest_edge, int(shortest_edge * height / width)
    return int(shortest_edge * width / height), shortest_edge


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Crop (H, W, C) around the centre, zero-padding a side that is too small."""
    h, w = pixels.shape[:2]
    if h < height or w < width:
        top_pad, left_pad = -(-(max(h, height) - h) // 2), -(-(max(w, width) - w) // 2)
        padded = np.zeros((max(h, height), max(w, width), pixels.shape[2]), dtype=pixels.dtype)
        padded[top_pad : top_pad + h, left_pad : left_pad + w] = pixels
        pixels, h, w = padded, padded.shape[0], padded.shape[1]
    top, left = (h - height) // 2, (w - width) // 2
    return pixels[top : top + height, left : left + width]


def preprocess(image: Image.Image, config: PreprocessConfig) -> np.ndarray:
    """One upright PIL image -> (H, W, 3) float32 array, normalised as CLIP expects."""
    rgb = to_rgb(image)
    rgb = rgb.resize(resized_size(*rgb.size, config.shortest_edge), resample=config.resample)
    pixels = center_crop(np.asarray(rgb), config.crop_height, config.crop_width)
    # Same arithmetic as transformers: scale in float64, then normalise in float32.
    scaled = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)
    mean = np.asarray(config.mean, dtype=np.float32)
    std = np.asarray(config.std, dtype=np.float32)
    return (scaled - mean) / std


def preprocess_bytes(data: bytes, config: PreprocessConfig) -> np.ndarray:
    """Decode, orient and preprocess one encoded image."""
    return preprocess(decode(data), config)

