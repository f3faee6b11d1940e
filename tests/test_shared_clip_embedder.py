"""MlxClipEmbedder implements the embedder protocol on the MLX CLIP model."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from shared.clip.embedder import ImageDecodeError, MlxClipEmbedder
from shared.clip.weights import ModelNotAvailable
from shared.embedders.base import DimensionMismatch, Embedder, EmbeddingError, ImageSource, PartialFailure
from shared.settings import Settings


def jpeg(colour_seed: int, size=(90, 60)) -> bytes:
    pixels = np.random.default_rng(colour_seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def source(key: str, data: bytes) -> ImageSource:
    return ImageSource(key=key, url=None, read=lambda: data)


@pytest.fixture(scope="module")
def embedder(tiny_clip):
    made = MlxClipEmbedder(
        model="tiny/clip", model_path=tiny_clip[0], expected_dim=24, batch_size=2
    )
    return made


def test_protocol_and_identity(embedder):
    assert isinstance(embedder, Embedder)
    assert embedder.model_id == "mlx:tiny/clip"
    assert embedder.dimensions == 24
    assert embedder.supports_texts and embedder.supports_images


def test_texts_are_unit_float32(embedder):
    vectors = embedder.embed_texts(["a photo of a cat", "東京", "🐶 " * 100])
    assert vectors.shape == (3, 24) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.embed_texts([]).shape == (0, 24)


def test_images_match_transformers_end_to_end(embedder, tiny_clip):
    import torch
    from transformers import CLIPImageProcessorPil

    datas = [jpeg(seed) for seed in range(5)]
    ours = embedder.embed_images([source(f"img{i}", d) for i, d in enumerate(datas)])
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size=32)
    pixels = processor(images=[Image.open(io.BytesIO(d)) for d in datas], return_tensors="pt")
    with torch.no_grad():
        expected = tiny_clip[1].get_image_features(pixel_values=pixels["pixel_values"])
    expected = getattr(expected, "pooler_output", expected).numpy()
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert ours.shape == (5, 24)
    assert np.sum(ours * expected, axis=1).min() >= 0.9999


def test_batches_come_back_in_order(embedder, tiny_clip):
    datas = [jpeg(seed) for seed in range(5)]
    sources = [source(str(i), d) for i, d in enumerate(datas)]
    one_by_one = np.concatenate([embedder.embed_images([s]) for s in sources])
    # Batches of 2: the next batch decodes while the model runs on this one.
    pipelined = MlxClipEmbedder(model_path=tiny_clip[0], batch_size=2)
    np.testing.assert_allclose(pipelined.embed_images(sources), one_by_one, atol=1e-5)


def test_bad_image_names_its_key_and_spares_its_neighbours(embedder):
    batch = [source("good.jpg", jpeg(1)), source("broken.jpg", b"not an image"), source("also good.jpg", jpeg(2))]
    with pytest.raises(PartialFailure) as caught:
        embedder.embed_images(batch)
    (error,) = caught.value.errors.values()
    assert isinstance(error, ImageDecodeError) and error.key == "broken.jpg"
    assert list(caught.value.errors) == [1] and sorted(caught.value.vectors) == [0, 2]
    alone = embedder.embed_images([batch[0], batch[2]])
    np.testing.assert_allclose(np.stack([caught.value.vectors[0], caught.value.vectors[2]]), alone, atol=1e-5)


def test_text_only_embedder(tiny_clip, embedder):
    text_only = MlxClipEmbedder(model_path=tiny_clip[0], text_only=True)
    assert not text_only.supports_images
    np.testing.assert_allclose(
        text_only.embed_texts(["red car"]), embedder.embed_texts(["red car"]), atol=1e-6
    )
    assert "vision_model" not in text_only.load().model
    with pytest.raises(EmbeddingError, match="text-only"):
        text_only.embed_images([source("a", jpeg(0))])


def test_wrong_expected_dimension(tiny_clip):
    with pytest.raises(DimensionMismatch, match="768"):
        MlxClipEmbedder(model_path=tiny_clip[0], expected_dim=768).load()


def test_the_factory_builds_it_from_settings(tiny_clip, tmp_path):
    from shared.embedders.factory import make_embedder

    settings = Settings(
        images_dir=tmp_path, data_dir=tmp_path, clip_model_path=tiny_clip[0], expected_vector_dim=24
    )
    made = make_embedder(settings, backend="mlx", text_only=True)
    assert made.model_id == "mlx:openai/clip-vit-large-patch14"
    assert made.model_path == tiny_clip[0] and made.text_only and made.expected_dim == 24
    assert made.embed_texts(["x"]).shape == (1, 24)


def test_concurrent_first_use_loads_once(tiny_clip):
    made = MlxClipEmbedder(model_path=tiny_clip[0], text_only=True)
    seen, barrier = [], threading.Barrier(4)

    def use():
        barrier.wait(timeout=60)
        seen.append(made.load())

    threads = [threading.Thread(target=use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a load did not finish in 120 s"
    assert len(seen) == 4 and all(item is seen[0] for item in seen)


def test_missing_weights_surface_as_embedding_error(tmp_path):
    with pytest.raises(ModelNotAvailable, match="CLIP_MODEL_PATH"):
        MlxClipEmbedder(model_path=tmp_path).embed_texts(["x"])


def test_a_waiting_text_query_goes_before_the_next_image_batch():
    from shared.clip.embedder import Turns

    turns = Turns()
    assert turns.may_start(text=False) and turns.may_start(text=True)
    turns.texts_waiting = 1  # a search is waiting for the model
    assert not turns.may_start(text=False) and turns.may_start(text=True)
    turns.busy = True  # and nothing starts while a pass runs
    assert not turns.may_start(text=True) and not turns.may_start(text=False)


def test_texts_and_images_share_one_model_from_many_threads(tiny_clip):
    folder, _ = tiny_clip
    embedder = MlxClipEmbedder(model_path=folder, batch_size=4)
    data = jpeg(11)
    sources = [source(f"i{i}", data) for i in range(6)]
    alone_text = embedder.embed_texts(["a cat"])[0]
    alone_image = embedder.embed_images(sources[:1])[0]
    results: list = []

    def images() -> None:
        for _ in range(3):
            results.append(("images", embedder.embed_images(sources)))

    def texts() -> None:
        for _ in range(5):
            results.append(("texts", embedder.embed_texts(["a cat"])))

    threads = [threading.Thread(target=work) for work in (images, images, texts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 11
    for kind, vectors in results:
        expected = alone_text if kind == "texts" else alone_image
        np.testing.assert_allclose(vectors, np.broadcast_to(expected, vectors.shape), atol=1e-5)
