"""Pair encoding matches the Hugging Face tokenizer CrossEncoder uses, truncation included."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.corpus import UNICODE
from runtime.errors import ModelLoadError
from runtime.tokenization import PairTokenizer

LONG = "the moon landing " * 400


def test_matches_hf_tokenizer_longest_first(tiny_dir: Path, tiny_ckpt: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(tiny_ckpt))
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 512)
    pairs = [("q", ""), ("a query", "a chunk"), ("q " * 300, LONG), ("short q", LONG),
             (LONG, "short chunk"), ("", "x"), ("Café?", " ".join(UNICODE))]
    enc = tok.encode_pairs(pairs)
    ref = hf([p[0] for p in pairs], [p[1] for p in pairs], truncation=True, max_length=512)
    for i in range(len(pairs)):
        assert enc.ids[i].tolist() == ref["input_ids"][i]
        assert enc.type_ids[i].tolist() == ref["token_type_ids"][i]
        assert enc.lengths[i] == len(ref["input_ids"][i]) <= 512


def test_segment_ids_mark_the_chunk(tiny_dir: Path) -> None:
    enc = PairTokenizer(tiny_dir / "tokenizer.json", 512).encode("who", ["moon"])
    assert enc.type_ids[0].tolist() == [0, 0, 0, 1, 1]


def test_truncation_is_reported(tiny_dir: Path) -> None:
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 512)
    enc = tok.encode("q", ["short", LONG], with_truncation=True)
    assert enc.truncated is not None
    assert enc.truncated[0] == 0
    assert enc.truncated[1] == tok.full_length(("q", LONG)) - 512 > 0


def test_query_alone_over_the_limit_is_handled(tiny_dir: Path) -> None:
    enc = PairTokenizer(tiny_dir / "tokenizer.json", 16).encode(LONG, ["a chunk"])
    assert enc.lengths[0] == 16


def test_bad_tokenizer_file(tmp_path: Path) -> None:
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ModelLoadError, match="Cannot read the tokenizer"):
        PairTokenizer(bad, 512)


def test_threaded_shards_match_one_batch(tiny_dir: Path) -> None:
    one = PairTokenizer(tiny_dir / "tokenizer.json", 512)
    many = PairTokenizer(tiny_dir / "tokenizer.json", 512, threads=3)
    chunks = [f"chunk {i} " + "moon " * (i % 700) for i in range(600)]
    a, b = one.encode("q", chunks), many.encode("q", chunks)
    assert a.lengths.tolist() == b.lengths.tolist()
    assert all(x.tolist() == y.tolist() for x, y in zip(a.ids, b.ids, strict=True))
    assert a.truncated is None
