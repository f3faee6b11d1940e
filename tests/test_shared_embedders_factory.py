"""`make_text_embedder`: which backend a setting picks, and the reason given when there is none."""

from __future__ import annotations

import dataclasses
import sys
import types

import pytest
from click.testing import CliRunner

from shared.embedders.factory import make_text_embedder
from shared.settings import Settings


@pytest.fixture
def base(tmp_path) -> Settings:
    return Settings(images_dir=tmp_path / "images", data_dir=tmp_path / "data")


def fake_backend(monkeypatch, module: str, cls: str, result=None, error: Exception | None = None) -> list:
    """Put a stand-in backend module in place; returns the settings it was built from."""
    calls = []

    def from_settings(settings, **kwargs):
        calls.append((settings, kwargs))
        if error:
            raise error
        return result

    fake = types.ModuleType(module)
    setattr(fake, cls, type(cls, (), {"from_settings": staticmethod(from_settings)}))
    monkeypatch.setitem(sys.modules, module, fake)
    return calls


def no_mlx(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "shared.clip.embedder", None)  # import raises ImportError


def test_none_turns_search_off(base):
    embedder, reason = make_text_embedder(dataclasses.replace(base, embedder="none"))
    assert embedder is None and "EMBEDDER=none" in reason


def test_replicate_without_token_says_so(base):
    embedder, reason = make_text_embedder(dataclasses.replace(base, embedder="replicate"))
    assert embedder is None and "REPLICATE_API_TOKEN" in reason


def test_auto_without_token_or_mlx_explains_how(base, monkeypatch):
    no_mlx(monkeypatch)
    embedder, reason = make_text_embedder(base)
    assert embedder is None
    assert "REPLICATE_API_TOKEN" in reason and "MLX" in reason


def test_auto_prefers_replicate_when_a_token_is_set(base, monkeypatch):
    sentinel = object()
    calls = fake_backend(monkeypatch, "shared.embedders.replicate", "ReplicateEmbedder", sentinel)
    fake_backend(monkeypatch, "shared.clip.embedder", "MlxClipEmbedder", object())
    settings = dataclasses.replace(base, replicate_api_token="r8_token")
    embedder, _ = make_text_embedder(settings)
    assert embedder is sentinel and calls[0][0] is settings


def test_auto_falls_back_to_local_mlx_weights_text_only(base, tiny_clip):
    settings = dataclasses.replace(base, clip_model_path=tiny_clip[0], expected_vector_dim=24)
    embedder, reason = make_text_embedder(settings)
    assert reason == "MLX CLIP" and not embedder.supports_images
    assert embedder.embed_texts(["a red bicycle"]).shape == (1, 24)


def test_auto_never_downloads_weights(base, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    embedder, reason = make_text_embedder(dataclasses.replace(base, clip_model="openai/clip-vit-large-patch14"))
    assert embedder is None
    assert "not downloaded automatically" in reason and "CLIP_MODEL_PATH" in reason


def test_mlx_without_weights_gives_the_backends_reason(base, tmp_path):
    missing = tmp_path / "models" / "clip"
    embedder, reason = make_text_embedder(dataclasses.replace(base, embedder="mlx", clip_model_path=missing))
    assert embedder is None and str(missing) in reason


def test_replicate_setup_error_never_repeats_the_token(base, monkeypatch):
    fake_backend(monkeypatch, "shared.embedders.replicate", "ReplicateEmbedder",
                 error=ValueError("bad model name"))
    embedder, reason = make_text_embedder(
        dataclasses.replace(base, embedder="replicate", replicate_api_token="r8_secret"))
    assert embedder is None and "bad model name" in reason and "r8_secret" not in reason


def test_browse_command_help_names_its_options():
    from browse.cli import main

    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--threads"):
        assert option in result.output
