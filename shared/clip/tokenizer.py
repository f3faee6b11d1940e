"""CLIP's byte-level BPE tokenizer, through the `tokenizers` library."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
# CLIP's word split: contractions, letter runs, single digits, runs of other symbols.
WORD_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_KEEP_CONTROL = {"\t", "\n", "\r"}  # whitespace the normaliser turns into single spaces


def clean_text(text: str) -> str:
    """ftfy-like basic cleaning: compose accents (NFC), drop control characters, trim.

    Kept deliberately small so ordinary queries get exactly the ids transformers'
    CLIPTokenizer gives (which also does NFC, whitespace collapsing and lower-casing).
    """
    text = unicodedata.normalize("NFC", text)
    text = "".join(
        " " if ch in _KEEP_CONTROL else ch
        for ch in text
        if ch in _KEEP_CONTROL or unicodedata.category(ch) != "Cc"
    )
    return text.strip()


def build_bpe(vocab: dict[str, int], merges: list[tuple[str, str]]) -> Tokenizer:
    """Assemble a CLIP tokenizer from a vocabulary and merge list (as vocab.json + merges.txt)."""
    tokenizer = Tokenizer(
        BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",  # CLIP marks word ends, not word starts
            fuse_unk=False,
            unk_token=END_TOKEN,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.post_processor = processors.RobertaProcessing(
        (END_TOKEN, vocab[END_TOKEN]), (START_TOKEN, vocab[START_TOKEN]), False, False
    )
    return tokenizer


def read_merges(path: Path) -> list[tuple[str, str]]:
    """Read merges.txt: a '#version' header, then one 'left right' pair per line."""
    pairs = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("#version") or not line.strip():
            continue
        left, right = line.split()
        pairs.append((left, right))
    return pairs


class ClipTokenizer:
    """Turns texts into CLIP token ids: start token, BPE pieces, end token, at most max_length."""

    def __init__(self, tokenizer: Tokenizer, max_length: int = 77) -> None:
        self.max_length = max_length
        self.start_id = _required_id(tokenizer, START_TOKEN)
        self.end_id = _required_id(tokenizer, END_TOKEN)
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()  # the model pads each batch only to its longest text
        # Truncation counts the added start/end tokens, so the end token always survives.
        self._tokenizer.enable_truncation(max_length=max_length)

    @classmethod
    def from_folder(cls, folder: Path, max_length: int = 77) -> ClipTokenizer:
        """Load tokenizer.json, or else vocab.json + merges.txt, from a checkpoint folder."""
        folder = Path(folder)
        if (folder / "tokenizer.json").is_file():
            return cls(Tokenizer.from_file(str(folder / "tokenizer.json")), max_length)
        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            return cls.from_vocab(folder / "vocab.json", folder / "merges.txt", max_length)
        raise FileNotFoundError(f"{folder} has neither tokenizer.json nor vocab.json + merges.txt")

    @classmethod
    def from_vocab(cls, vocab_path: Path, merges_path: Path, max_length: int = 77) -> ClipTokenizer:
        """Build the tokenizer from vocab.json and merges.txt."""
        vocab = json.loads(Path(vocab_path).read_text(encoding="utf-8"))
        return cls(build_bpe(vocab, read_merges(merges_path)), max_length)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, each framed by the start and end tokens, unpadded."""
        encodings = self._tokenizer.encode_batch([clean_text(text) for text in texts])
        return [encoding.ids for encoding in encodings]

    def encode_padded(self, texts: list[str]) -> list[list[int]]:
        """Token ids padded with the end token to max_length (the layout CLIP was trained on)."""
        return [ids + [self.end_id] * (self.max_length - len(ids)) for ids in self.encode(texts)]


def _required_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:
        raise ValueError(f"tokenizer has no {token} token: not a CLIP tokenizer")
    return token_id
