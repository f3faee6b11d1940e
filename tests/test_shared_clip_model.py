"""The MLX CLIP towers reproduce transformers' CLIPModel embeddings."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from shared.clip.loading import load_model
from shared.clip.model import pack_tokens
from shared.clip.tokenizer import ClipTokenizer
from conftest import (
    TINY_TEXT,
    TINY_VISION,
    VIT_L_14_PROJECTION,
    VIT_L_14_TEXT,
    VIT_L_14_VISION,
    save_random_clip,
)

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


# float32 runs both ways: as on a CPU (numpy steps, split products) and as one MLX graph,
# the path a GPU takes; float16 is always one graph. float32 agrees with transformers to
# ~2e-7 per component: `atol` holds it to 1e-5, where exact GELU in place of quick-GELU
# (a cosine still above 0.99999) is off by ~2e-3.
PATHS = pytest.mark.parametrize(
    "dtype,cpu_path,threshold,atol",
    [("float32", True, 0.9999, 1e-5), ("float32", False, 0.9999, 1e-5),
     ("float16", False, 0.999, None)],
    ids=["float32-cpu-path", "float32-one-graph", "float16"],
)


@PATHS
def test_tiny_text_matches_transformers(tiny_clip, tokenizer, dtype, cpu_path, threshold, atol):
    folder, reference = tiny_clip
    model = load_model(folder, dtype=dtype, cpu_path=cpu_path)
    assert model.cpu_path is cpu_path
    ours = model.encode_text(tokenizer.encode(TEXTS))
    expected = reference_text(reference, tokenizer.encode_padded(TEXTS))
    assert ours.dtype == np.float32 and ours.shape == (len(TEXTS), 24)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert cosines(ours, expected).min() >= threshold
    if atol is not None:
        np.testing.assert_allclose(ours, expected, atol=atol)


@PATHS
def test_tiny_images_match_transformers(tiny_clip, dtype, cpu_path, threshold, atol):
    folder, reference = tiny_clip
    pixels = random_pixels(3, TINY_VISION["image_size"])
    ours = load_model(folder, dtype=dtype, cpu_path=cpu_path).encode_images(pixels)
    expected = reference_images(reference, pixels)
    assert ours.dtype == np.float32 and ours.shape == (3, 24)
    assert cosines(ours, expected).min() >= threshold
    if atol is not None:
        np.testing.assert_allclose(ours, expected, atol=atol)


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
    folder = tmp_path_factory.mktemp("vit-l-14")
    reference = save_random_clip(
        folder, VIT_L_14_TEXT, VIT_L_14_VISION, projection_dim=VIT_L_14_PROJECTION
    )
    tokenizer = ClipTokenizer.from_folder(clip_tokenizer_dir)
    texts = ["a photo of a cat", "two dogs playing in the snow at sunset"]
    expected_text = reference_text(reference, tokenizer.encode_padded(texts))
    pixels = random_pixels(2, 224)
    expected_images = reference_images(reference, pixels)
    model = load_model(folder)
    for cpu_path in (True, False):  # one model, both ways of running it
        model.cpu_path = cpu_path
        ours = model.encode_text(tokenizer.encode(texts))
        assert ours.shape == (2, 768)
        assert cosines(ours, expected_text).min() >= 0.9999
        assert cosines(model.encode_images(pixels), expected_images).min() >= 0.9999
        assert cosines(model.encode_images(pixels[:1]), expected_images[:1]).min() >= 0.9999


def test_compiled_and_eager_graphs_agree(tiny_clip, tokenizer):
    compiled = load_model(tiny_clip[0], cpu_path=False)
    eager = load_model(tiny_clip[0], compiled=False, cpu_path=False)
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


def test_cpu_path_splits_change_nothing(tiny_clip, tokenizer):
    """Products split by columns over streams, a batch split over worker threads, and calls
    from other threads (MLX streams are per thread) give the one-graph answers."""
    graph = load_model(tiny_clip[0], cpu_path=False)
    model = load_model(tiny_clip[0], cpu_path=True)
    model._cores = 3  # split even on a one-core machine, and unevenly
    ids = tokenizer.encode(TEXTS)
    pixels = random_pixels(5, TINY_VISION["image_size"], seed=9)
    expected_text, expected_images = graph.encode_text(ids), graph.encode_images(pixels)
    np.testing.assert_allclose(model.encode_text(ids), expected_text, atol=1e-5)
    np.testing.assert_allclose(model.encode_images(pixels), expected_images, atol=1e-5)
    np.testing.assert_allclose(model.encode_images(pixels[:1]), expected_images[:1], atol=1e-5)
    with ThreadPoolExecutor(2) as others:
        texts = others.submit(model.encode_text, ids)
        images = others.submit(model.encode_images, pixels)
        np.testing.assert_allclose(texts.result(timeout=120), expected_text, atol=1e-5)
        np.testing.assert_allclose(images.result(timeout=120), expected_images, atol=1e-5)
