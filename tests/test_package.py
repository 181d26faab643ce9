"""The installed package: only `crossrank` at the top level, the command, the CrossEncoder API
against sentence-transformers' own."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from crossrank.export.corpus import passages_for
from crossrank.runtime.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_adds_only_crossrank(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(wheels), str(ROOT)], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    (wheel,) = wheels.glob("crossrank-*.whl")
    env = tmp_path / "venv"
    venv.create(env, with_pip=True)
    py = env / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               timeout=60).stdout.strip())
    before = {p.name for p in site.iterdir()}
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        str(wheel)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    added = {p.name for p in site.iterdir()} - before
    assert added == {"crossrank", "crossrank-0.1.0.dist-info"}, added
    assert (site / "crossrank" / "runtime" / "http" / "server.py").is_file()
    assert (site / "crossrank" / "export" / "pipeline.py").is_file()
    # the command is installed and answers without its dependencies (lazy imports)
    r = subprocess.run([str(env / "bin" / "crossrank"), "--version"], capture_output=True,
                       text=True, timeout=60, cwd=tmp_path)
    assert r.stdout.strip() == "crossrank 0.1.0", r.stderr


def test_crossencoder_rank_and_predict_match_sentence_transformers(realistic_ckpt: Path,
                                                                   realistic_dir: Path) -> None:
    from sentence_transformers import CrossEncoder as Seed

    from crossrank import CrossEncoder

    query, docs = passages_for("moon", 40, seed=3000)
    seed = Seed(str(realistic_ckpt), max_length=512, device="cpu")
    with CrossEncoder(realistic_dir, variant="fp32") as ours:
        want = seed.rank(query, docs, top_k=5, return_documents=True)
        got = ours.rank(query, docs, top_k=5, return_documents=True)
        assert [g["corpus_id"] for g in got] == [int(w["corpus_id"]) for w in want]
        assert [g["text"] for g in got] == [w["text"] for w in want]
        assert np.allclose([g["score"] for g in got], [float(w["score"]) for w in want],
                           atol=1e-3)
        assert all(type(g["score"]) is float for g in got)
        everything = ours.rank(query, docs)
        assert len(everything) == 40 and "text" not in everything[0]
        pairs = [(query, d) for d in docs[:8]]
        p = ours.predict(pairs, batch_size=4)
        assert p.dtype == np.float32 and p.shape == (8,)
        assert np.allclose(p, seed.predict(pairs, show_progress_bar=False), atol=1e-3)
        one = ours.predict(pairs[0])  # a single pair gives a single score, as in the seed
        assert np.ndim(one) == 0 and abs(float(one) - float(p[0])) <= 1e-5
        sig = ours.predict(pairs, activation_fn=lambda x: 1 / (1 + np.exp(-x)))
        assert ((0 < sig) & (sig < 1)).all()


def test_crossencoder_refuses_what_it_cannot_do(realistic_ckpt: Path, tiny_dir: Path) -> None:
    from crossrank import CrossEncoder

    with pytest.raises(ConfigError, match="crossrank export"):
        CrossEncoder(realistic_ckpt)  # a checkpoint, not an export: no download, no export
    with CrossEncoder(tiny_dir, variant="fp32", max_length=64) as ce:
        assert ce.max_length == 64
        with pytest.raises(ConfigError, match="torch"):
            ce.predict([("q", "d")], convert_to_tensor=True)
        with pytest.raises(ConfigError, match="pair"):
            ce.predict([("q", "d", "e")])
    with pytest.raises(ConfigError, match="device"):
        CrossEncoder(tiny_dir, device="tpu")
    with pytest.raises(ConfigError, match="max_length"):
        CrossEncoder(tiny_dir, max_length=4096)
