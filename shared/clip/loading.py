"""Build a ClipModel from a checkpoint folder in the dtype asked for."""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx

from shared.clip.config import ClipConfig
from shared.clip.model import ClipModel
from shared.clip.weights import read_tensors, to_mlx_layout

DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def default_dtype() -> str:
    """float32 on CPUs (half precision has no fast kernels there), float16 on a GPU."""
    return "float16" if mx.default_device() == mx.gpu else "float32"


def load_model(
    folder: Path,
    dtype: str = "float32",
    text_only: bool = False,
    compiled: bool = True,
    cpu_path: bool | None = None,
) -> ClipModel:
    """Read config.json and model.safetensors from `folder` into a ready-to-run model.

    `cpu_path` (see `shared.clip.cpu`) defaults to on for float32 on MLX's CPU backend.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if cpu_path is None:
        cpu_path = mx.default_device() == mx.cpu and dtype == "float32"
    config = ClipConfig.from_file(folder / "config.json")
    model = ClipModel(config, text_only=text_only, compiled=compiled, cpu_path=cpu_path)
    tensors = to_mlx_layout(read_tensors(folder, text_only=text_only))
    target = DTYPES[dtype]
    weights = [(key, mx.array(value).astype(target)) for key, value in tensors.items()]
    del tensors  # numpy copies go now, keeping peak memory near one copy of the weights
    model.load_weights(weights, strict=True)  # strict: a missing or extra key is a bad checkpoint
    mx.eval(model.parameters())
    model.eval()
    return model
