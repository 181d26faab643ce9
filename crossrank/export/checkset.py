"""The exporter's int8 check requests: real prose with vector-search-like candidate lists.

Frozen in data/checkset.json.gz (built by tools/build_checkset.py from the Python language
reference that CPython ships): 16 hand-written questions in two disjoint sets, "ranking" (the
check) and "held_out" (a second sample: int8 ships only if both pass), each against 100
candidates (its relevant passages plus the lexically nearest others), with 0/1 labels.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data" / "checkset.json.gz"
SETS = ("ranking", "held_out")


@dataclass(frozen=True)
class CheckSet:
    """One set's requests, flattened: pairs, each pair's request index, and its label."""

    name: str
    pairs: tuple[tuple[str, str], ...]
    groups: tuple[int, ...]
    labels: tuple[int, ...]


@lru_cache(maxsize=1)
def _data() -> dict[str, Any]:
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def load(name: str) -> CheckSet:
    """The named set ("ranking" or "held_out")."""
    if name not in SETS:
        raise ValueError(f"unknown check set {name!r}; choose one of {', '.join(SETS)}")
    data = _data()
    texts = data["passages"]
    pairs: list[tuple[str, str]] = []
    groups: list[int] = []
    labels: list[int] = []
    for i, req in enumerate(r for r in data["requests"] if r["set"] == name):
        pairs += [(req["query"], texts[j]) for j in req["candidates"]]
        groups += [i] * len(req["candidates"])
        labels += req["labels"]
    return CheckSet(name, tuple(pairs), tuple(groups), tuple(labels))


def describe() -> dict[str, str]:
    """Where the check set's text comes from and its digest, for the manifest."""
    return {"source": str(_data()["source"]), "sha256": str(_data()["sha256"])}
