"""`make_embedder`: which backend a setting picks, and the reason given when there is none."""

from __future__ import annotations

import dataclasses
import sys

import pytest
from click.testing import CliRunner

from shared.embedders.base import Embedder
from shared.embedders.factory import NoEmbedder, make_embedder
from shared.settings import Settings


@pytest.fixture
def base(tmp_path) -> Settings:
    return Settings(images_dir=tmp_path / "images", data_dir=tmp_path / "data")


def no_mlx(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "shared.clip.embedder", None)  # import raises ImportError


def reason(settings: Settings, **kwargs) -> str:
    with pytest.raises(NoEmbedder) as err:
        make_embedder(settings, **kwargs)
    return str(err.value)


def test_none_turns_embedding_off(base):
    assert "EMBEDDER=none" in reason(dataclasses.replace(base, embedder="none"))


def test_replicate_without_token_says_so(base):
    assert "REPLICATE_API_TOKEN is not set" in reason(dataclasses.replace(base, embedder="replicate"))


def test_auto_without_token_or_mlx_explains_both(base, monkeypatch):
    no_mlx(monkeypatch)
    text = reason(base)
    assert "REPLICATE_API_TOKEN" in text and "MLX" in text


def test_auto_prefers_replicate_when_a_token_is_set(base):
    from shared.embedders.replicate import ReplicateEmbedder

    embedder = make_embedder(dataclasses.replace(base, replicate_api_token="r8_token"))
    assert isinstance(embedder, ReplicateEmbedder) and isinstance(embedder, Embedder)
    assert embedder.dimensions == 768 and embedder.concurrency == 8 and embedder.batch_size == 1


def test_a_backend_argument_wins_over_the_setting(base, tiny_clip):
    settings = dataclasses.replace(base, embedder="none", clip_model_path=tiny_clip[0],
                                   expected_vector_dim=24)
    embedder = make_embedder(settings, backend="mlx", text_only=True)
    assert embedder.model_id.startswith("mlx:") and not embedder.supports_images


def test_auto_falls_back_to_local_mlx_weights(base, tiny_clip):
    settings = dataclasses.replace(base, clip_model_path=tiny_clip[0], expected_vector_dim=24)
    embedder = make_embedder(settings, text_only=True)
    assert not embedder.supports_images and embedder.dimensions == 24
    vectors = embedder.embed_texts(["a red bicycle"])
    assert vectors.shape == (1, 24)
    assert abs(float((vectors[0] ** 2).sum()) - 1.0) < 1e-5  # unit length from the backend itself


def test_a_server_never_waits_for_a_download(base, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "http://127.0.0.1:9")  # no hub
    text = reason(dataclasses.replace(base, clip_model="openai/clip-vit-large-patch14"),
                  waiting=False)
    assert "not on this machine yet" in text and "mise run up" in text
    assert "CLIP_MODEL_PATH" in text and "could not list" not in text  # the hub was not asked


@pytest.mark.parametrize("backend, waiting, allowed", [
    ("auto", True, True), ("mlx", True, True), ("replicate", True, False), ("none", True, False),
    ("auto", False, False), ("mlx", False, False),
])
def test_may_download_is_the_one_decision(backend, waiting, allowed):
    from shared.embedders.factory import may_download

    assert may_download(backend, waiting) is allowed


def test_mlx_without_weights_gives_the_backends_reason(base, tmp_path):
    missing = tmp_path / "models" / "clip"
    assert str(missing) in reason(dataclasses.replace(base, embedder="mlx", clip_model_path=missing))


def test_replicate_setup_error_never_repeats_the_token(base):
    settings = dataclasses.replace(base, embedder="replicate", replicate_api_token="r8_secret",
                                   replicate_model="not a model name")
    text = reason(settings)
    assert "REPLICATE_MODEL" in text and "r8_secret" not in text


def test_loader_embed_follows_the_embedder_setting(tmp_path, db_url):
    from loader.cli import main

    (tmp_path / "images").mkdir()
    env = {"SUPABASE_DB_URL": db_url, "IMAGES_DIR": str(tmp_path / "images"),
           "DATA_DIR": str(tmp_path / "data"), "EMBEDDER": "none", "REPLICATE_API_TOKEN": "r8_x"}
    result = CliRunner().invoke(main, ["embed"], env=env)
    assert result.exit_code == 1 and "EMBEDDER=none" in result.output


def test_browse_command_help_names_its_options():
    from browse.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--threads"):
        assert option in result.output
