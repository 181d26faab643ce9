"""Pair encoding matches the Hugging Face tokenizer CrossEncoder uses, truncation included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossrank.export.corpus import UNICODE
from crossrank.runtime.core.batching import Encoded
from crossrank.runtime.core.errors import ConfigError, ModelLoadError
from crossrank.runtime.text.pairs import PairTokenizer
from tests.helpers import full_length, row

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
        ids, types = row(enc.rows, i)
        assert ids == ref["input_ids"][i]
        assert types == ref["token_type_ids"][i]
        assert enc.lengths[i] == len(ref["input_ids"][i]) <= 512


def test_segment_ids_mark_the_chunk(tiny_dir: Path) -> None:
    enc = PairTokenizer(tiny_dir / "tokenizer.json", 512).encode("who", ["moon"])
    assert row(enc.rows, 0)[1] == [0, 0, 0, 1, 1]


def test_truncation_is_reported(tiny_dir: Path) -> None:
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 512)
    enc = tok.encode("q", ["short", LONG], with_truncation=True)
    assert enc.truncated is not None
    assert enc.truncated[0] == 0
    assert enc.truncated[1] == full_length(tiny_dir / "tokenizer.json", ("q", LONG)) - 512 > 0


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
    assert a.rows.ids.tolist() == b.rows.ids.tolist()
    assert a.truncated is None


def _library(tok: PairTokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    return [(list(e.ids), list(e.type_ids)) for e in tok._tok.encode_batch(pairs)]


def _rows(enc: Encoded) -> list[tuple[list[int], list[int]]]:
    return [row(enc.rows, i) for i in range(enc.n_rows)]


@pytest.mark.parametrize("max_length", [16, 17, 64, 512])
def test_fast_path_equals_library_pair_encoding(tiny_dir: Path, max_length: int) -> None:
    """Every split of the budget: query and chunk lengths on a grid around the limit."""
    tok = PairTokenizer(tiny_dir / "tokenizer.json", max_length)
    assert tok.template is not None
    sizes = sorted({0, 1, 2, max_length // 2 - 2, max_length // 2 - 1, max_length // 2,
                    max_length // 2 + 1, max_length - 4, max_length - 3, max_length,
                    max_length + 7, 2 * max_length})
    pairs = [(" ".join(["tide"] * a), " ".join(["moon"] * b)) for a in sizes for b in sizes]
    enc = tok.encode_pairs(pairs, with_truncation=True)
    assert _rows(enc) == _library(tok, pairs)
    full = [full_length(tiny_dir / "tokenizer.json", p) for p in pairs]
    assert enc.truncated is not None
    assert enc.truncated.tolist() == [f - int(n) for f, n in zip(full, enc.lengths, strict=True)]


def _library_left(tiny_dir: Path, max_length: int,
                  pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    from tokenizers import Tokenizer

    lib = Tokenizer.from_file(str(tiny_dir / "tokenizer.json"))
    lib.no_padding()
    lib.enable_truncation(max_length=max_length, strategy="longest_first", direction="left")
    return [(list(e.ids), list(e.type_ids)) for e in lib.encode_batch(pairs)]


@pytest.mark.parametrize("max_length", [16, 64, 512])
@pytest.mark.parametrize("backend", ["tokenizers", "nanotoken", "library-pairs"])
def test_left_truncation_equals_the_library_cutting_from_the_left(
        tiny_dir: Path, max_length: int, backend: str) -> None:
    """truncation_side='left' (TEI's truncation_direction Left): the same longest-first counts,
    each text keeping its last tokens, on every path that encodes pairs."""
    if backend == "nanotoken":
        pytest.importorskip("nanotoken")
    tok = PairTokenizer(tiny_dir / "tokenizer.json", max_length,
                        backend="tokenizers" if backend == "library-pairs" else backend)
    if backend == "library-pairs":
        tok.template = None  # the library's own pair encoding
    sizes = sorted({0, 1, max_length // 2 - 1, max_length // 2, max_length - 3, max_length,
                    2 * max_length})
    pairs = [(" ".join(f"t{i}" for i in range(a)), " ".join(f"m{i}" for i in range(b)))
             for a in sizes for b in sizes] + [("Café naïve 東京 " * 40, " ".join(UNICODE))]
    enc = tok.encode_pairs(pairs, with_truncation=True, side="left")
    assert _rows(enc) == _library_left(tiny_dir, max_length, pairs)
    right = tok.encode_pairs(pairs, with_truncation=True)
    assert enc.lengths.tolist() == right.lengths.tolist()
    assert enc.truncated is not None and right.truncated is not None
    assert enc.truncated.tolist() == right.truncated.tolist()


def test_fast_path_many_queries_and_unicode(tiny_dir: Path) -> None:
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 512, threads=3)
    pairs = [(q, c) for q in ("", "who?", "Café naïve 東京 " * 40, LONG)
             for c in ("", "x", " ".join(UNICODE), LONG, "ab " * 255)] * 20
    assert _rows(tok.encode_pairs(pairs)) == _library(tok, pairs)
    chunks = [c for _, c in pairs]
    assert _rows(tok.encode("who?", chunks)) == _library(tok, [("who?", c) for c in chunks])


def test_other_pair_templates_are_learned(tiny_dir: Path, tmp_path: Path) -> None:
    """A RoBERTa-style template (<s> A </s></s> B </s>, all segment ids 0) works the same."""
    import json

    spec = json.loads((tiny_dir / "tokenizer.json").read_text())
    cls_id, sep_id = spec["model"]["vocab"]["[CLS]"], spec["model"]["vocab"]["[SEP]"]
    spec["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}},
                   {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}},
                 {"Sequence": {"id": "B", "type_id": 0}},
                 {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
        "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [cls_id], "tokens": ["[CLS]"]},
                           "[SEP]": {"id": "[SEP]", "ids": [sep_id], "tokens": ["[SEP]"]}},
    }
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec))
    tok = PairTokenizer(path, 64)
    assert tok.template is not None
    pairs = [("who walked", "on the moon"), ("q " * 40, "c " * 40), ("", "")]
    got = _rows(tok.encode_pairs(pairs))
    assert got == _library(tok, pairs)
    assert got[0][0][:1] == [cls_id] and got[0][0].count(sep_id) == 3


def test_library_path_when_the_template_is_unknown(tiny_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import crossrank.runtime.text.pairs as t

    monkeypatch.setattr(t, "_learn_template", lambda tok: None)
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 64)
    assert tok.template is None
    pairs = [("who", "moon " * 100), ("q", "")]
    enc = tok.encode_pairs(pairs, with_truncation=True)
    assert _rows(enc) == _library(tok, pairs)
    assert enc.truncated is not None and enc.truncated.tolist() == [
        full_length(tiny_dir / "tokenizer.json", pairs[0]) - 64, 0]


def test_disagreeing_fast_path_is_turned_off(tiny_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import crossrank.runtime.text.pairs as t

    real = t._longest_first
    monkeypatch.setattr(t, "_longest_first", lambda a, b, n: real(a, b, n + 1))
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 64)
    assert tok.template is None
    assert _rows(tok.encode("q", ["moon " * 100])) == _library(tok, [("q", "moon " * 100)])


def test_a_template_probe_that_fails_falls_back(tiny_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import crossrank.runtime.text.pairs as t

    def broken(tok: object) -> None:
        raise RuntimeError("cannot encode pairs")

    monkeypatch.setattr(t, "_learn_template", broken)
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 64)
    assert tok.template is None
    assert _rows(tok.encode("q", ["moon"])) == _library(tok, [("q", "moon")])


# -- nanotoken: used only where it gives the tokenizers library's ids --------------------------

def adversarial_texts(n: int, seed: int) -> list[str]:
    """Seeded strings from an alphabet of trouble: control, zero-width, bidi, combining marks,
    CJK, emoji, ligatures, punctuation, digits and long runs without spaces."""
    import random

    rng = random.Random(seed)
    alphabet = (list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                + list(" \t\n\r.,;:!?'\"()[]{}-_/\\@#$%^&*+=<>|~`")
                + ["\x00", "\x01", "\x1f", "\x7f", "\u200b", "\u200c", "\u200d", "\u2060",
                   "\u202e", "\u202c", "\u00ad", "\ufeff", "\u0301", "\u0308", "\u0327", "é",
                   "ß", "ﬁ", "Ⅻ", "①", "²", "東", "京", "語", "한", "ё", "Ж", "ع", "ש", "ह",
                   "ไ", "🚀", "👩\u200d🚀", "🇫🇷", "€", "£", "\u3000", "\u00a0", "\u2028"])
    out = []
    for _ in range(n):
        k = rng.choice((0, 1, 3, 12, 60, 400))
        out.append("".join(rng.choice(alphabet) for _ in range(k)))
    return out


def nano_and_library(tiny_dir: Path) -> tuple[PairTokenizer, PairTokenizer]:
    pytest.importorskip("nanotoken")
    nano = PairTokenizer(tiny_dir / "tokenizer.json", 512, backend="nanotoken")
    lib = PairTokenizer(tiny_dir / "tokenizer.json", 512, backend="tokenizers")
    assert nano.backend == "nanotoken" and lib.backend == "tokenizers"
    return nano, lib


def test_nanotoken_gives_the_library_ids_on_10k_texts(tiny_dir: Path) -> None:
    from crossrank.export.corpus import FILLER, TOPICS, mixed_chunks, sample_pairs
    from crossrank.runtime.text.encoders import probe_texts

    nano, lib = nano_and_library(tiny_dir)
    texts = (mixed_chunks(3000, seed=11) + [p for _, p in sample_pairs(2000, seed=12)]
             + adversarial_texts(5000, seed=13) + probe_texts() + list(UNICODE) + FILLER
             + [s for _, ss in TOPICS.values() for s in ss] + ["word" * 3000, "é" * 5000])
    assert len(texts) >= 10_000
    a, b = nano.encode_alone(texts), lib.encode_alone(texts)
    assert np.array_equal(a.offsets, b.offsets)
    assert np.array_equal(a.ids, b.ids)
    # and the pairs built from them, truncation included
    pa = nano.encode("what causes tides?", texts[:3000], with_truncation=True)
    pb = lib.encode("what causes tides?", texts[:3000], with_truncation=True)
    assert np.array_equal(pa.rows.ids, pb.rows.ids)
    assert pa.truncated is not None and pb.truncated is not None
    assert np.array_equal(pa.truncated, pb.truncated)


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(min_size=0, max_size=300), min_size=1, max_size=8))
def test_nanotoken_agrees_with_the_library_on_any_text(tiny_dir: Path, texts: list[str]) -> None:
    nano, lib = nano_and_library(tiny_dir)
    texts = [t.encode("utf-8", "replace").decode("utf-8") for t in texts]  # as the server cleans
    a, b = nano.encode_alone(texts), lib.encode_alone(texts)
    assert a.ids.tolist() == b.ids.tolist() and a.offsets.tolist() == b.offsets.tolist()


def test_a_disagreeing_nanotoken_is_not_used(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    nanotoken = pytest.importorskip("nanotoken")

    class Wrong:
        def encode_batch(self, texts: list[str], **_: object) -> tuple[np.ndarray, np.ndarray]:
            ids = np.ones(len(texts), dtype=np.uint32)  # one token each: wrong for most texts
            return ids, np.arange(len(texts) + 1, dtype=np.int64)

    monkeypatch.setattr(nanotoken.WordPieceTokenizer, "from_json", lambda _: Wrong())
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 512)
    assert tok.backend == "tokenizers" and "disagrees" in caplog.text
    with pytest.raises(ConfigError, match="nanotoken"):
        PairTokenizer(tiny_dir / "tokenizer.json", 512, backend="nanotoken")


def test_without_nanotoken_the_library_tokenizes(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import sys

    caplog.set_level(logging.INFO)
    monkeypatch.setitem(sys.modules, "nanotoken", None)  # import fails as if not installed
    tok = PairTokenizer(tiny_dir / "tokenizer.json", 512)
    assert tok.backend == "tokenizers" and "not installed" in caplog.text
    assert tok.encode("q", ["a"]).lengths.tolist() == [5]
