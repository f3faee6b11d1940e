"""The CLIP tokenizer gives transformers' CLIPTokenizer's ids on real-world queries."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.clip.tokenizer import ClipTokenizer, clean_text

QUERIES = [
    line
    for line in (Path(__file__).parent / "data" / "clip" / "queries.txt")
    .read_text(encoding="utf-8")
    .split("\n")
    if line
] + [
    "line one\nline two",
    "windows\r\nline ending",
    "no-break\u00a0space",
    "e\u0301 decomposed accent",  # NFD input: must compose like transformers does
    "",
]


def reference_ids(hf_tokenizer, texts: list[str]) -> list[list[int]]:
    return hf_tokenizer(texts, truncation=True, max_length=77)["input_ids"]


def test_cat_query_gives_known_ids(clip_vocab_dir):
    tokenizer = ClipTokenizer.from_folder(clip_vocab_dir)
    assert tokenizer.encode(["a photo of a cat"]) == [[49406, 320, 1125, 539, 320, 2368, 49407]]


def test_query_list_is_varied_enough():
    assert len(QUERIES) >= 200
    assert any(ord(ch) > 0x3000 for q in QUERIES for ch in q)  # CJK
    assert any(ord(ch) > 0x1F000 for q in QUERIES for ch in q)  # emoji


@pytest.mark.parametrize("layout", ["tokenizer.json", "vocab.json+merges.txt"])
def test_ids_match_transformers(layout, clip_tokenizer_dir, clip_vocab_dir, hf_tokenizer):
    folder = clip_tokenizer_dir if layout == "tokenizer.json" else clip_vocab_dir
    tokenizer = ClipTokenizer.from_folder(folder)
    expected = reference_ids(hf_tokenizer, QUERIES)
    got = tokenizer.encode(QUERIES)
    mismatches = [(q, g, e) for q, g, e in zip(QUERIES, got, expected) if g != e]
    assert not mismatches, mismatches[:3]


def test_truncation_keeps_the_end_token(clip_vocab_dir):
    tokenizer = ClipTokenizer.from_folder(clip_vocab_dir)
    ids = tokenizer.encode(["photo " * 200, "short"])
    assert len(ids[0]) == 77
    assert ids[0][0] == tokenizer.start_id and ids[0][-1] == tokenizer.end_id
    assert ids[0].count(tokenizer.end_id) == 1


def test_padding_to_max_length(clip_vocab_dir):
    tokenizer = ClipTokenizer.from_folder(clip_vocab_dir)
    padded = tokenizer.encode_padded(["a", "a much longer query about cats"])
    assert [len(row) for row in padded] == [77, 77]
    assert padded[0][:3] == [49406, 320, 49407] and set(padded[0][2:]) == {49407}


def test_clean_text_drops_control_characters():
    assert clean_text("  cat\x00\x07 dog\tbird \x1b ") == "cat dog bird"


def test_folder_without_tokenizer_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.json"):
        ClipTokenizer.from_folder(tmp_path)
