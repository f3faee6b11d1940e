"""The MLX CLIP towers reproduce transformers' CLIPModel embeddings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared.clip.loading import load_model
from shared.clip.model import pack_tokens
from shared.clip.tokenizer import ClipTokenizer
from conftest import TINY_TEXT, TINY_VISION, save_random_clip

TEXTS = [
    "a photo of a cat",
    "sunset over the ocean 🌅",
    "東京の夜景",
    "x",
    "a very long description " * 20,  # truncated to 77 tokens
]


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def features(output) -> np.ndarray:
    """transformers 5 returns an output object (projection in pooler_output); 4.x a tensor."""
    tensor = getattr(output, "pooler_output", output)
    return unit(tensor.detach().float().numpy())


def reference_text(model, token_rows: list[list[int]]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return features(model.get_text_features(input_ids=torch.tensor(token_rows)))


def reference_images(model, pixels_nhwc: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        pixels = torch.tensor(pixels_nhwc.transpose(0, 3, 1, 2).copy())
        return features(model.get_image_features(pixel_values=pixels))


def random_pixels(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, size, size, 3)).astype(np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(unit(a) * unit(b), axis=1)


@pytest.fixture(scope="module")
def tokenizer(tiny_clip) -> ClipTokenizer:
    return ClipTokenizer.from_folder(tiny_clip[0])


@pytest.mark.parametrize("dtype,threshold", [("float32", 0.9999), ("float16", 0.999)])
def test_tiny_text_matches_transformers(tiny_clip, tokenizer, dtype, threshold):
    folder, reference = tiny_clip
    ours = load_model(folder, dtype=dtype).encode_text(tokenizer.encode(TEXTS))
    expected = reference_text(reference, tokenizer.encode_padded(TEXTS))
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 24)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosines(ours, expected).min() >= threshold


@pytest.mark.parametrize("dtype,threshold", [("float32", 0.9999), ("float16", 0.999)])
def test_tiny_images_match_transformers(tiny_clip, dtype, threshold):
    folder, reference = tiny_clip
    pixels = random_pixels(3, TINY_VISION["image_size"])
    ours = load_model(folder, dtype=dtype).encode_images(pixels)
    assert ours.dtype == np.float32 and ours.shape == (3, 24)
    assert cosines(ours, reference_images(reference, pixels)).min() >= threshold


def test_running_only_to_the_end_token_changes_nothing(tiny_clip, tokenizer):
    model = load_model(tiny_clip[0])
    short = model.encode_text(tokenizer.encode(TEXTS))
    full = model.encode_text(tokenizer.encode_padded(TEXTS))
    one_by_one = np.concatenate([model.encode_text(tokenizer.encode([t])) for t in TEXTS])
    np.testing.assert_allclose(short, full, atol=1e-5)
    np.testing.assert_allclose(short, one_by_one, atol=1e-5)


def test_text_only_load_skips_the_vision_tower(tiny_clip, tokenizer):
    full = load_model(tiny_clip[0])
    text_only = load_model(tiny_clip[0], text_only=True)
    assert "vision_model" not in text_only and "visual_projection" not in text_only
    np.testing.assert_allclose(
        text_only.encode_text(tokenizer.encode(TEXTS)),
        full.encode_text(tokenizer.encode(TEXTS)),
        atol=1e-6,
    )
    with pytest.raises(RuntimeError, match="without its vision tower"):
        text_only.encode_images(random_pixels(1, TINY_VISION["image_size"]))


def test_legacy_eos_config_and_gelu_activation(tmp_path, tokenizer):
    """Old configs (eos_token_id 2) pool at the largest id; hidden_act is honoured."""
    text = dict(TINY_TEXT, eos_token_id=2, hidden_act="gelu")
    vision = dict(TINY_VISION, hidden_act="gelu")
    reference = save_random_clip(tmp_path, text, vision, projection_dim=16, seed=3)
    model = load_model(tmp_path)
    assert model.config.text.eos_token_id == 2 and model.config.text.hidden_act == "gelu"
    ours = model.encode_text(tokenizer.encode(TEXTS))
    assert cosines(ours, reference_text(reference, tokenizer.encode_padded(TEXTS))).min() >= 0.9999
    pixels = random_pixels(2, TINY_VISION["image_size"], seed=5)
    assert cosines(model.encode_images(pixels), reference_images(reference, pixels)).min() >= 0.9999


def test_pooling_position_rules():
    rows = [[49406, 5, 49407], [49406, 7, 8, 9, 49407]]
    ids, pool_at = pack_tokens(rows, eos_token_id=49407)
    assert ids.shape == (2, 8) and pool_at.tolist() == [2, 4]
    # Legacy rule: the position of the largest id, here a token above the end token.
    _, legacy = pack_tokens([[49406, 49500, 3, 49407]], eos_token_id=2)
    assert legacy.tolist() == [1]


def test_unknown_activation_is_refused(tmp_path):
    save_random_clip(tmp_path, TINY_TEXT, TINY_VISION, projection_dim=16)
    config = (tmp_path / "config.json").read_text().replace('"quick_gelu"', '"mish"', 1)
    (tmp_path / "config.json").write_text(config)
    with pytest.raises(ValueError, match="unsupported hidden_act 'mish'"):
        load_model(tmp_path)


@pytest.mark.slow
def test_vit_large_architecture_matches_transformers(tmp_path_factory, clip_tokenizer_dir):
    """The full ViT-L/14 shape (random weights, 1.7 GB): the default model's architecture."""
    from transformers import CLIPConfig

    default = CLIPConfig.from_dict(
        {
            "projection_dim": 768,
            "text_config": {
                "hidden_size": 768,
                "intermediate_size": 3072,
                "num_attention_heads": 12,
                "num_hidden_layers": 12,
                "eos_token_id": 2,
                "projection_dim": 768,
            },
            "vision_config": {
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_attention_heads": 16,
                "num_hidden_layers": 24,
                "image_size": 224,
                "patch_size": 14,
                "projection_dim": 768,
            },
        }
    )
    folder = tmp_path_factory.mktemp("vit-l-14")
    reference = save_random_clip(
        folder, default.text_config.to_dict(), default.vision_config.to_dict(), projection_dim=768
    )
    tokenizer = ClipTokenizer.from_folder(clip_tokenizer_dir)
    texts = ["a photo of a cat", "two dogs playing in the snow at sunset"]
    model = load_model(folder)
    ours = model.encode_text(tokenizer.encode(texts))
    assert ours.shape == (2, 768)
    assert cosines(ours, reference_text(reference, tokenizer.encode_padded(texts))).min() >= 0.9999
    pixels = random_pixels(1, 224)
    assert cosines(model.encode_images(pixels), reference_images(reference, pixels)).min() >= 0.9999


def test_compiled_and_eager_paths_agree(tiny_clip, tokenizer):
    compiled = load_model(tiny_clip[0])
    eager = load_model(tiny_clip[0], compiled=False)
    ids = tokenizer.encode(TEXTS)
    np.testing.assert_allclose(compiled.encode_text(ids), eager.encode_text(ids), atol=1e-5)
    pixels = random_pixels(2, TINY_VISION["image_size"])
    np.testing.assert_allclose(
        compiled.encode_images(pixels), eager.encode_images(pixels), atol=1e-5
    )


def test_length_buckets_and_limit():
    ids, _ = pack_tokens([[49406] + [5] * 8 + [49407]], eos_token_id=49407)
    assert ids.shape == (1, 16)  # 10 tokens run as 16, not 77
    with pytest.raises(ValueError, match="at most 77"):
        pack_tokens([[1] * 78], eos_token_id=49407)


def test_batch_split_over_cpu_streams_changes_nothing(tiny_clip):
    model = load_model(tiny_clip[0])
    model._stream_count = 2  # split even where this machine has one core
    pixels = random_pixels(5, TINY_VISION["image_size"], seed=9)
    split = model.encode_images(pixels)
    # From another thread, whose streams are its own (MLX streams are per thread).
    with ThreadPoolExecutor(1) as other:
        from_other_thread = other.submit(model.encode_images, pixels).result()
    model._stream_count = 1  # one stream, the whole batch at once
    whole = model.encode_images(pixels)
    np.testing.assert_allclose(split, whole, atol=1e-5)
    np.testing.assert_allclose(from_other_thread, whole, atol=1e-5)
