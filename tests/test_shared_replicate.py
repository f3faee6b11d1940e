"""The Replicate embedder, through the real `replicate` client, against a local server."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fake_replicate import FEATURES, KRTHR, KRTHR_VERSION, TOKEN, FakeReplicate, fake_vector, unit

from shared.embedders.base import (
    DimensionMismatch,
    Embedder,
    EmbedderUnavailable,
    EmbeddingError,
    ImageSource,
    PartialFailure,
)
from shared.embedders.replicate import ReplicateEmbedder, _retry_after
from shared.embedders.retry import Backoff, GaveUp, RateLimiter
from shared.settings import Settings

FAST = Backoff(max_attempts=4, base_seconds=0.01, max_seconds=0.05)


def embedder(server: FakeReplicate, **kwargs) -> ReplicateEmbedder:
    values = dict(base_url=server.url, backoff=FAST, max_per_minute=60_000, poll_interval=0.01, timeout=5.0)
    values.update(kwargs)
    return ReplicateEmbedder(kwargs.pop("token", TOKEN), **{k: v for k, v in values.items() if k != "token"})


def url_image(name: str) -> ImageSource:
    return ImageSource(name, f"https://images.example/{name}", lambda: pytest.fail("a URL image was read"))


def byte_image(name: str, data: bytes) -> ImageSource:
    return ImageSource(name, None, lambda: data)


def test_texts_are_unit_vectors_of_the_model_output(server):
    e = embedder(server)
    assert isinstance(e, Embedder)
    vectors = e.embed_texts(["a red bicycle", "a cat on a sofa"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, 768)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors[1], unit(fake_vector("a cat on a sofa")), rtol=1e-5)
    assert server.predicted == {"a red bicycle": 1, "a cat on a sofa": 1}


def test_model_without_version_uses_the_model_endpoint(server):
    e = embedder(server, model=KRTHR)
    np.testing.assert_allclose(e.embed_texts(["x"])[0], unit(fake_vector("x")), rtol=1e-5)
    assert next(iter(server.predictions.values())).version == KRTHR_VERSION


def test_images_go_as_url_or_as_uploaded_bytes(server):
    e = embedder(server)
    vectors = e.embed_images([url_image("a.jpg"), byte_image("dir/b.png", b"\x89PNG pixels")])
    np.testing.assert_allclose(vectors[0], unit(fake_vector("https://images.example/a.jpg")), rtol=1e-5)
    np.testing.assert_allclose(vectors[1], unit(fake_vector(server.file_key(b"\x89PNG pixels"))), rtol=1e-5)
    assert server.stats["uploads"] == 1


def test_clip_features_batches_distinct_lines(server):
    e = embedder(server, model=FEATURES)
    names = [f"img{i % 40}.jpg" for i in range(70)]  # 40 distinct, 30 repeats
    vectors = e.embed_images([url_image(n) for n in names])
    assert server.stats["creates"] == 2  # 32 + 8 distinct lines
    for name, vector in zip(names, vectors):
        np.testing.assert_allclose(vector, unit(fake_vector(f"https://images.example/{name}")), rtol=1e-5)
    texts = e.embed_texts(["two\nlines", "two lines"])
    np.testing.assert_allclose(texts[0], texts[1])
    with pytest.raises(EmbeddingError, match="as an image URL"):
        e.embed_texts(["https://not-a-text.example"])


@pytest.mark.parametrize("fault", ["throttle", "error500", "malformed", "slow"])
def test_transient_faults_are_retried(server, fault):
    # The client gives a create `Prefer: wait=1` 1.5 s to answer; a slow fault stalls 2 s.
    server.slow_seconds = 2.0
    e = embedder(server, wait_seconds=1)
    times = 1 if fault == "slow" else 2
    server.queue(fault, times=times)
    started = time.monotonic()
    vectors = e.embed_images([url_image("a.jpg")])
    np.testing.assert_allclose(vectors[0], unit(fake_vector("https://images.example/a.jpg")), rtol=1e-5)
    assert server.stats["creates"] == times + 1
    if fault == "throttle":
        assert time.monotonic() - started >= 0.4  # Retry-After: 0.2, twice
        assert server.stats["throttled"] == 2


def test_a_slow_prediction_is_polled(server):
    server.latency = 0.3
    e = embedder(server, wait_seconds=1)
    server.latency = 1.5  # longer than Prefer: wait=1, so the answer is "starting"
    vector = e.embed_texts(["slow"])[0]
    np.testing.assert_allclose(vector, unit(fake_vector("slow")), rtol=1e-5)
    assert server.stats["gets"] >= 2


def test_gives_up_on_one_item_after_n_attempts(server):
    e = embedder(server, model=KRTHR)
    server.queue("error500", times=4)
    with pytest.raises(PartialFailure) as caught:
        e.embed_images([url_image("bad.jpg"), url_image("good.jpg")])
    error = caught.value.errors[0]
    assert isinstance(error, GaveUp) and error.attempts == 4
    assert "HTTP 500" in str(error)
    assert set(caught.value.vectors) == {1}
    np.testing.assert_allclose(caught.value.vectors[1], unit(fake_vector("https://images.example/good.jpg")), rtol=1e-5)


def test_failed_prediction_fails_only_its_item_and_is_not_retried(server):
    server.fail_when = ("broken",)
    e = embedder(server)
    with pytest.raises(PartialFailure) as caught:
        e.embed_images([url_image("ok.jpg"), url_image("broken.jpg")])
    assert set(caught.value.errors) == {1} and set(caught.value.vectors) == {0}
    assert "could not read" in str(caught.value.errors[1])
    assert server.stats["creates"] == 2


def test_wrong_length_output_is_a_dimension_mismatch(server):
    server.dim = 512
    with pytest.raises(DimensionMismatch, match=r"512-dimensional.*EXPECTED_VECTOR_DIM is 768"):
        embedder(server).embed_images([url_image("a.jpg")])


def test_bad_or_missing_token_is_a_clear_error_without_the_token(server):
    with pytest.raises(EmbedderUnavailable, match="REPLICATE_API_TOKEN") as caught:
        embedder(server, token="r8_secret_wrong_token").embed_texts(["x"])
    assert "r8_secret" not in str(caught.value)
    with pytest.raises(EmbedderUnavailable, match="REPLICATE_API_TOKEN is not set"):
        ReplicateEmbedder(None)


def test_unsupported_model_is_refused():
    with pytest.raises(EmbeddingError, match="not supported"):
        ReplicateEmbedder(TOKEN, model="someone/else:123")
    with pytest.raises(EmbeddingError, match="owner/name"):
        ReplicateEmbedder(TOKEN, model="no-slash")


def test_the_factory_builds_it_from_settings(tmp_path, server):
    from shared.embedders.factory import make_embedder

    settings = Settings(images_dir=tmp_path, data_dir=tmp_path, replicate_api_token=TOKEN,
                        replicate_base_url=server.url, replicate_model=FEATURES, expected_vector_dim=768)
    e = make_embedder(settings, backend="replicate")
    assert e.model_id == FEATURES and e.dimensions == 768 and e.batch_size == 32
    assert TOKEN not in repr(e)


def test_pacing_stays_under_the_servers_limit(server):
    server.limit(per_minute=1200, burst=3)  # Replicate too allows short bursts
    e = embedder(server, max_per_minute=1200)
    started = time.monotonic()
    e.embed_texts([f"t{i}" for i in range(15)])
    assert server.stats["throttled"] == 0
    assert time.monotonic() - started >= 14 * 0.05 * 0.95


def test_retry_after_comes_from_header_or_message():
    assert _retry_after("3", "") == 3.0
    assert _retry_after(None, "Request was throttled. Your rate limit resets in ~30s.") == 30.0
    assert _retry_after(None, "Request was throttled. Expected available in 1 second.") == 1.0
    assert _retry_after(None, "nothing") is None


def test_rate_limiter_spaces_calls_and_holds_off():
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(600, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):
        limiter.acquire()
    assert slept == pytest.approx([0.1, 0.1])
    limiter.hold_off(5.0)
    limiter.acquire()
    assert slept[-1] == pytest.approx(5.0)
