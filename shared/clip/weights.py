"""Find a Hugging Face CLIP checkpoint (local folder or hub download) and read its tensors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from safetensors import safe_open

from shared.embedders.base import EmbeddingError

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
# Only what this package reads: never the .bin/.h5/.msgpack copies some repos also carry.
NEEDED_FILES = [
    "config.json",
    WEIGHTS_FILE,
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
]
TEXT_PREFIXES = ("text_model.", "text_projection.", "logit_scale")


class ModelNotAvailable(EmbeddingError):
    """The CLIP weights could be neither found locally nor downloaded."""


def resolve_checkpoint(
    model: str, model_path: Path | None = None, download: bool = True, on_progress=None
) -> Path:
    """Return a folder holding config.json and model.safetensors, downloading if allowed.

    A download resumes where an earlier one stopped, and reports to `on_progress` (a
    `shared.clip.download.DownloadProgress` per MiB); an exception raised there stops it.
    """
    if model_path is not None:
        return _check_folder(Path(model_path).expanduser(), f"CLIP_MODEL_PATH={model_path}")
    if Path(model).expanduser().is_dir():  # a folder given as the model name works too
        return _check_folder(Path(model).expanduser(), f"CLIP_MODEL={model}")
    return _check_folder(_from_hub(model, download, on_progress), f"the Hugging Face repo {model}")


def _from_hub(repo_id: str, download: bool, on_progress) -> Path:
    """The cached snapshot of `repo_id`, fetched first when allowed and missing."""
    from shared.clip.download import cached_checkpoint, download_checkpoint

    folder = cached_checkpoint(repo_id)
    if folder is not None:
        return folder
    if not download:
        raise ModelNotAvailable(
            f"the CLIP weights {repo_id!r} are not on this machine yet: `mise run up` (or "
            "`loader embed`) downloads them once, or set CLIP_MODEL_PATH to a local copy"
        )
    log.info("fetching CLIP weights %s from the Hugging Face hub (once; cached)", repo_id)
    try:
        return download_checkpoint(repo_id, on_progress=on_progress)
    except ModelNotAvailable as exc:
        raise ModelNotAvailable(
            f"{exc}. Run again to resume, or download the model's folder (config.json, "
            "model.safetensors, tokenizer files) elsewhere and set CLIP_MODEL_PATH to it"
        ) from exc


def _check_folder(folder: Path, origin: str) -> Path:
    missing = [name for name in ("config.json", WEIGHTS_FILE) if not (folder / name).is_file()]
    if missing:
        raise ModelNotAvailable(
            f"{origin}: {folder} lacks {', '.join(missing)}; CLIP_MODEL_PATH must be a folder with "
            "a Hugging Face CLIPModel checkpoint in safetensors format"
        )
    return folder


def read_tensors(folder: Path, text_only: bool = False) -> dict[str, np.ndarray]:
    """Read the checkpoint's tensors as numpy arrays, only the text tower's when asked."""
    tensors: dict[str, np.ndarray] = {}
    # safe_open reads tensor by tensor, so a text-only load never touches the vision weights.
    with safe_open(str(folder / WEIGHTS_FILE), framework="numpy") as handle:
        for key in handle.keys():  # noqa: SIM118  (a safe_open handle is not iterable)
            if key.endswith("position_ids"):
                continue  # a buffer in old checkpoints, not a weight
            if text_only and not key.startswith(TEXT_PREFIXES):
                continue
            tensors[key] = handle.get_tensor(key)
    return tensors


def to_mlx_layout(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rearrange torch-layout tensors for MLX: the patch conv goes (out,in,kh,kw) -> (out,kh,kw,in)."""
    key = "vision_model.embeddings.patch_embedding.weight"
    if key in tensors:
        tensors[key] = np.ascontiguousarray(tensors[key].transpose(0, 2, 3, 1))
    return tensors
