"""Shared fixtures: CLIP's real vocabulary and tiny random-weight CLIP checkpoints."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
BPE_MERGES_GZ = DATA / "clip" / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408

# Tiny but complete: every kind of layer, several heads, the real 49,408-token vocabulary.
TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "vocab_size": VOCAB_SIZE,
    "max_position_embeddings": 77,
}
TINY_VISION = {
    "hidden_size": 48,
    "intermediate_size": 96,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "image_size": 32,
    "patch_size": 8,
}


def byte_symbols() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each of the 256 bytes, in vocabulary order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    symbols = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in symbols:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return [symbols[byte] for byte in printable] + [
        symbols[byte] for byte in range(256) if byte not in printable
    ]


def write_vocab_files(folder: Path) -> None:
    """Write CLIP's vocab.json and merges.txt, derived from the merge list."""
    with gzip.open(BPE_MERGES_GZ, "rt", encoding="utf-8") as merges_file:
        lines = merges_file.read().split("\n")
    # Line 0 is a version header; OpenAI keeps 49152 - 256 - 2 merges, so 512 byte tokens,
    # the merges and two special tokens make 49,408.
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE
    vocab = {token: index for index, token in enumerate(tokens)}
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )


@pytest.fixture(scope="session")
def clip_vocab_dir(tmp_path_factory) -> Path:
    """A folder with vocab.json and merges.txt only (the older Hugging Face layout)."""
    folder = tmp_path_factory.mktemp("clip-vocab")
    write_vocab_files(folder)
    return folder


@pytest.fixture(scope="session")
def hf_tokenizer(clip_vocab_dir):
    """transformers' CLIPTokenizer on the same files: the reference for token ids."""
    from transformers import CLIPTokenizer

    # Positional on purpose: vocab_file= by keyword silently builds an empty vocabulary.
    return CLIPTokenizer(str(clip_vocab_dir / "vocab.json"), str(clip_vocab_dir / "merges.txt"))


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory, hf_tokenizer) -> Path:
    """A folder with tokenizer.json as transformers saves it."""
    folder = tmp_path_factory.mktemp("clip-tokenizer")
    hf_tokenizer.save_pretrained(folder)
    assert (folder / "tokenizer.json").is_file()
    return folder


def save_random_clip(
    folder: Path, text: dict, vision: dict, projection_dim: int, seed: int = 0, **extra
):
    """Save a random-weight transformers CLIPModel (safetensors) and return it in eval mode."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=projection_dim, **extra
    )
    model = CLIPModel(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    return model


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory, clip_tokenizer_dir):
    """(folder, transformers model) for a tiny random CLIP with the real tokenizer files."""
    folder = tmp_path_factory.mktemp("tiny-clip")
    model = save_random_clip(folder, TINY_TEXT, TINY_VISION, projection_dim=24)
    (folder / "tokenizer.json").write_bytes((clip_tokenizer_dir / "tokenizer.json").read_bytes())
    return folder, model
