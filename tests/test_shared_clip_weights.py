"""Finding CLIP weights: local folders, the hub, and a clear error when neither works."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.clip.weights import ModelNotAvailable, read_tensors, resolve_checkpoint
from shared.embedders.base import EmbeddingError

ROOT = Path(__file__).resolve().parents[1]

ATTEMPT = """
from shared.clip.weights import resolve_checkpoint, ModelNotAvailable
try:
    resolve_checkpoint({repo!r})
except ModelNotAvailable as exc:
    print("ERROR:", exc)
"""


def try_download(repo: str, tmp_path: Path, **env: str) -> str:
    """Run a download in a fresh process: huggingface_hub reads its settings at import."""
    environment = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(ROOT), **env}
    done = subprocess.run(
        [sys.executable, "-c", ATTEMPT.format(repo=repo)],
        check=False,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_offline_hub_gives_a_clear_error(tmp_path):
    out = try_download("openai/clip-vit-large-patch14", tmp_path, HF_HUB_OFFLINE="1")
    assert "ERROR: could not list the files of the Hugging Face repo 'openai/clip-vit-large-patch14'" in out
    assert "downloads are off (HF_HUB_OFFLINE is set)" in out
    assert "set CLIP_MODEL_PATH to it" in out and out.count("\n") == 1


def test_unreachable_hub_gives_a_clear_error(tmp_path):
    # Port 9 on loopback refuses connections at once: an unreachable hub without waiting.
    out = try_download("openai/clip-vit-base-patch32", tmp_path, HF_ENDPOINT="http://127.0.0.1:9")
    assert "ERROR: could not list the files of the Hugging Face repo 'openai/clip-vit-base-patch32'" in out
    assert "at http://127.0.0.1:9: cannot connect" in out
    assert "CLIP_MODEL_PATH" in out


def test_local_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailable, match="lacks model.safetensors") as caught:
        resolve_checkpoint("openai/clip-vit-large-patch14", tmp_path)
    assert isinstance(caught.value, EmbeddingError)
    assert "CLIP_MODEL_PATH" in str(caught.value)


def test_local_folder_is_used_without_the_hub(tiny_clip):
    folder, _ = tiny_clip
    assert resolve_checkpoint("not/a-real-repo", folder) == folder
    assert resolve_checkpoint(str(folder)) == folder  # a folder as the model name also works


def test_text_only_read_skips_vision_tensors(tiny_clip):
    folder, _ = tiny_clip
    everything = read_tensors(folder)
    text = read_tensors(folder, text_only=True)
    assert any(key.startswith("vision_model.") for key in everything)
    assert "visual_projection.weight" in everything
    assert text and all(
        key.startswith(("text_model.", "text_projection", "logit_scale")) for key in text
    )
    assert set(text) < set(everything)
