"""Build crossrank/export/data/checkset.json.gz: the exporter's int8 check requests, from real prose.

Source: the Python language reference as CPython ships it (`pydoc_data.topics`, PSF licence):
real English technical prose, present offline on every machine. The two aggregate topics that
repeat others ("compound", "specialnames") are left out so that a passage belongs to one topic.
Each topic is cut into passages of 60-160 words (paragraphs packed in order).

Queries are hand-written questions, each naming the topics that answer it (its relevance labels).
Candidates are what a first-stage search would hand a re-ranker: the query's relevant passages plus
its lexically nearest other passages (TF-IDF cosine) up to CANDIDATES, so most candidates are hard
negatives on the same subject rather than random filler.

The output is frozen in the repository so every Python version checks with the same requests; run
this again only to change the set (and say why in the commit):

    .venv/bin/python tools/build_checkset.py
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "crossrank" / "export" / "data" / "checkset.json.gz"
CANDIDATES = 100
MAX_RELEVANT = 20
SKIP = {"compound", "specialnames"}

# (set, query, topics that answer it). "ranking" is the check set; "held_out" a second, disjoint
# set of queries (int8 ships only if both pass, so one lucky sample cannot ship it).
QUERIES: list[tuple[str, str, tuple[str, ...]]] = [
    ("ranking", "What happens to assert statements when Python runs with optimizations turned on?",
     ("assert",)),
    ("ranking", "How can a class customize what happens when a missing attribute is looked up?",
     ("attribute-access",)),
    ("ranking", "In what order are operators evaluated in a Python expression?",
     ("operator-summary",)),
    ("ranking", "How does the with statement call __enter__ and __exit__ on a context manager?",
     ("with", "context-managers")),
    ("ranking", "When are default parameter values of a function evaluated?", ("function",)),
    ("ranking", "What is the difference between global and nonlocal declarations?",
     ("global", "nonlocal", "naming")),
    ("ranking", "How do I format a number with a thousands separator and fixed precision?",
     ("formatstrings",)),
    ("ranking", "How does Python decide whether an object counts as true or false?",
     ("truth", "booleans")),
    ("held_out", "How do I split a string on whitespace or strip characters from its ends?",
     ("string-methods",)),
    ("held_out", "Does the finally clause run when an exception is raised inside try?", ("try",)),
    ("held_out", "Which methods should a container class implement to support len and indexing?",
     ("sequence-types",)),
    ("held_out", "How are relative imports resolved inside a package?", ("import",)),
    ("held_out", "How do I set a breakpoint and step through code in the debugger?",
     ("debugger",)),
    ("held_out", "How do I get a value from a dictionary with a default when the key is missing?",
     ("typesmapping",)),
    ("held_out", "How does slicing with a step work on lists, tuples and ranges?",
     ("typesseq", "slicings")),
    ("held_out", "How are escape sequences handled in string and bytes literals?", ("strings",)),
]

_WORD = re.compile(r"[a-z0-9_]+")


def passages(text: str, lo: int = 60, hi: int = 160) -> list[str]:
    """Consecutive paragraphs packed into passages of lo-hi words (a long paragraph is split)."""
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    words: list[str] = []
    out: list[str] = []
    for para in paras:
        words += para.split()
        while len(words) >= hi:
            out.append(" ".join(words[:hi]))
            words = words[hi:]
        if len(words) >= lo:
            out.append(" ".join(words))
            words = []
    if words and out and len(words) < lo:
        out[-1] = out[-1] + " " + " ".join(words)
    elif words:
        out.append(" ".join(words))
    return out


def tfidf(docs: list[str]) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Sublinear TF-IDF vectors, L2-normalised, and the IDF table."""
    counts = [Counter(_WORD.findall(d.lower())) for d in docs]
    df: Counter[str] = Counter()
    for c in counts:
        df.update(c.keys())
    idf = {w: math.log(len(docs) / n) + 1.0 for w, n in df.items()}
    return [_normed(c, idf) for c in counts], idf


def _normed(c: Counter[str], idf: dict[str, float]) -> dict[str, float]:
    v = {w: (1.0 + math.log(n)) * idf.get(w, 0.0) for w, n in c.items()}
    norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
    return {w: x / norm for w, x in v.items()}


def build() -> dict[str, object]:
    import pydoc_data.topics as src

    pool: list[str] = []
    topic_of: list[str] = []
    seen: set[str] = set()
    for topic in sorted(src.topics):
        if topic in SKIP:
            continue
        for p in passages(src.topics[topic]):
            if p not in seen:  # a passage repeated in two topics is kept once
                seen.add(p)
                pool.append(p)
                topic_of.append(topic)
    vecs, idf = tfidf(pool)
    requests = []
    used: dict[int, int] = {}
    for set_name, query, topics in QUERIES:
        missing = [t for t in topics if t not in topic_of]
        if missing:
            raise SystemExit(f"topic(s) {missing} not in this Python's pydoc_data")
        qv = _normed(Counter(_WORD.findall(query.lower())), idf)
        sims = [sum(x * v.get(w, 0.0) for w, x in qv.items()) for v in vecs]
        order = sorted(range(len(pool)), key=lambda i: (-sims[i], i))
        relevant = [i for i in order if topic_of[i] in topics][:MAX_RELEVANT]
        others = [i for i in order if topic_of[i] not in topics][:CANDIDATES - len(relevant)]
        chosen = sorted(relevant + others, key=lambda i: (-sims[i], i))  # first-stage order
        idx = [used.setdefault(i, len(used)) for i in chosen]
        requests.append({"set": set_name, "query": query, "topics": list(topics),
                         "candidates": idx,
                         "labels": [int(topic_of[i] in topics) for i in chosen]})
    texts = [""] * len(used)
    for i, j in used.items():
        texts[j] = pool[i]
    body = {"passages": texts, "requests": requests}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return {"source": f"pydoc_data.topics of CPython {sys.version.split()[0]} (Python language "
                      "reference, PSF licence); queries hand-written; candidates by TF-IDF",
            "sha256": digest, **body}


def main() -> None:
    data = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(OUT, "wb", mtime=0) as f:  # mtime 0: the same bytes every build
        f.write(json.dumps(data, sort_keys=True, separators=(",", ":")).encode())
    reqs = data["requests"]
    assert isinstance(reqs, list)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes): {len(data['passages'])} passages, "  # type: ignore[arg-type]
          f"{len(reqs)} requests, relevant per request "
          f"{[sum(r['labels']) for r in reqs]}")


if __name__ == "__main__":
    main()
