"""The shape of a CLIP checkpoint, read from a Hugging Face `config.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

@dataclass(frozen=True)
class TextConfig:
    """Sizes of the text tower."""

    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    vocab_size: int = 49408
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407


@dataclass(frozen=True)
class VisionConfig:
    """Sizes of the vision tower."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclass(frozen=True)
class ClipConfig:
    """Both towers and the width of the shared embedding space."""

    text: TextConfig
    vision: VisionConfig
    projection_dim: int = 512

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ClipConfig:
        """Build from the parsed contents of a CLIPModel `config.json`."""
        if "text_config" not in raw or "vision_config" not in raw:
            raise ValueError("config.json has no text_config/vision_config: not a CLIPModel config")
        return cls(
            text=_pick(TextConfig, raw["text_config"]),
            vision=_pick(VisionConfig, raw["vision_config"]),
            projection_dim=int(raw.get("projection_dim", 512)),
        )

    @classmethod
    def from_file(cls, path: Path) -> ClipConfig:
        """Read a `config.json`."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def _pick(kind: type, raw: dict[str, Any]):
    """Keep the keys the dataclass knows; a None in the JSON means 'use the default'."""
    known = kind.__dataclass_fields__
    values = {key: value for key, value in raw.items() if key in known and value is not None}
    if isinstance(values.get("eos_token_id"), list):  # transformers allows a list here
        values["eos_token_id"] = values["eos_token_id"][0]
    return kind(**values)
