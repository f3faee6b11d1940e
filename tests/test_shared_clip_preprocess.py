"""Image preprocessing equals transformers' CLIPImageProcessor (PIL backend) exactly."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.clip.preprocess import (
    PreprocessConfig,
    decode,
    preprocess,
    preprocess_bytes,
    resized_size,
)

WILD = Path(__file__).parent / "data" / "wild" / "orientation"


@pytest.fixture(scope="module")
def reference():
    """transformers' CLIP image processor on the PIL backend (the one without torchvision)."""
    from transformers import CLIPImageProcessorPil

    return CLIPImageProcessorPil()


def expected(processor, image: Image.Image) -> np.ndarray:
    return processor(images=image, return_tensors="np")["pixel_values"][0].transpose(1, 2, 0)


def synthetic_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(7)
    noise = rng.integers(0, 256, size=(300, 517, 4), dtype=np.uint8)
    return {
        "rgba-wide": Image.fromarray(noise, "RGBA"),
        "rgb-tall": Image.fromarray(noise[:, :181, :3].copy(), "RGB"),
        "grey": Image.fromarray(noise[:, :, 0].copy(), "L"),
        "palette": Image.fromarray(noise[:, :, :3].copy(), "RGB").convert("P"),
        "small": Image.fromarray(noise[:10, :13, :3].copy(), "RGB"),  # upscaled, not cropped away
        "square-224": Image.fromarray(noise[:224, :224, :3].copy(), "RGB"),
    }


@pytest.mark.parametrize("name", sorted(synthetic_images()))
def test_synthetic_images_match(reference, name):
    image = synthetic_images()[name]
    ours = preprocess(image, PreprocessConfig())
    assert ours.shape == (224, 224, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected(reference, image))


@pytest.mark.parametrize("name", ["landscape_6.jpg", "portrait_8.jpg", "orientation_rectangle.jpg"])
def test_exif_rotated_photos_match_after_transpose(reference, name):
    data = (WILD / name).read_bytes()
    upright = decode(data)
    raw = Image.open(io.BytesIO(data))
    # These files are stored sideways (EXIF orientation 6 or 8): decoding turns them.
    assert raw.getexif().get(0x0112) in (6, 8)
    assert upright.size == raw.size[::-1]
    np.testing.assert_array_equal(
        preprocess_bytes(data, PreprocessConfig()), expected(reference, upright)
    )


def test_config_file_is_respected(tmp_path, reference):
    (tmp_path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "size": {"shortest_edge": 64},
                "crop_size": {"height": 48, "width": 56},
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.25, 0.5, 1.0],
            }
        )
    )
    config = PreprocessConfig.for_checkpoint(tmp_path, image_size=224)
    assert (config.shortest_edge, config.crop_height, config.crop_width) == (64, 48, 56)
    image = synthetic_images()["rgb-tall"]
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": 64},
        crop_size={"height": 48, "width": 56},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.25, 0.5, 1.0],
    )
    np.testing.assert_array_equal(preprocess(image, config), expected(processor, image))


def test_defaults_follow_the_model_size(tmp_path):
    config = PreprocessConfig.for_checkpoint(tmp_path, image_size=336)
    assert (config.shortest_edge, config.crop_height, config.crop_width) == (336, 336, 336)


def test_resized_size_truncates_the_long_side():
    assert resized_size(450, 600, 224) == (224, 298)  # 298.67 truncated, as transformers does
    assert resized_size(600, 450, 224) == (298, 224)


def test_heic_decodes(tmp_path):
    import pillow_heif

    pillow_heif.register_heif_opener()
    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, format="HEIF")
    image = decode(buffer.getvalue())
    assert image.size == (40, 30)
