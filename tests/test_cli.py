"""The `crossrank` command: score in a pipe, info, serve's early failures, help without heavy
imports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from crossrank.runtime.scorer import Scorer
from tests.helpers import free_port

ROOT = Path(__file__).resolve().parent.parent
QUERY = "Who was the first person to walk on the moon?"
CHUNKS = ["The moon orbits the Earth.", "Neil Armstrong walked on the moon in 1969.",
          "Bread needs flour."]


def crossrank(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crossrank", *args], input=stdin,
                          capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})


def test_score_reads_a_json_object_from_stdin(tiny_dir: Path) -> None:
    r = crossrank("score", "--model-dir", str(tiny_dir), "--variant", "fp32",
                  stdin=json.dumps({"query": QUERY, "chunks": CHUNKS}))
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want = Scorer.from_dir(tiny_dir, variant="fp32").score(QUERY, CHUNKS)
    assert [i for i, _ in got] == [i for i, _ in want]
    assert np.allclose([s for _, s in got], [s for _, s in want], atol=1e-5)


def test_score_json_lines_and_plain_lines(tiny_dir: Path, tmp_path: Path) -> None:
    lines = "\n".join(json.dumps({"query": q, "chunks": CHUNKS}) for q in ("moon", "bread"))
    r = crossrank("score", "--model-dir", str(tiny_dir), stdin=lines + "\n")
    assert r.returncode == 0, r.stderr
    answers = [json.loads(x) for x in r.stdout.splitlines()]
    assert len(answers) == 2 and all(sorted(i for i, _ in a) == [0, 1, 2] for a in answers)
    f = tmp_path / "chunks.txt"
    f.write_text("\n".join(CHUNKS) + "\n\n")
    r = crossrank("score", str(f), "--model-dir", str(tiny_dir), "--query", QUERY,
                  "--top-k", "2", "--with-text", "--activation", "sigmoid")
    assert r.returncode == 0, r.stderr
    top = json.loads(r.stdout)
    assert len(top) == 2 and {"index", "score", "text"} == set(top[0])
    assert top[0]["text"] == CHUNKS[top[0]["index"]] and 0 < top[0]["score"] < 1


@pytest.mark.parametrize(("stdin", "message"), [
    ("", "no input"),
    ('{"chunks": ["a"]}', "'query' is required"),  # the HTTP API's words, from its readers
    ('{"query": " ", "chunks": ["a"]}', "'query' must not be empty"),
    ('{"query": "q"}', "'chunks' is required"),
    ('{"query": "q", "chunks": "a"}', "must be a list"),
    ('{"query": "q", "chunks": ["a"]}\n{oops', "line 2 is not valid JSON"),
    ('{"query": "q", "chunks": ["a", 3]}', "'chunks[1]' must be a string"),
])
def test_score_bad_input_is_one_line(tiny_dir: Path, stdin: str, message: str) -> None:
    r = crossrank("score", "--model-dir", str(tiny_dir), stdin=stdin)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_score_missing_model_dir_names_the_export_command(tmp_path: Path) -> None:
    r = crossrank("score", "--model-dir", str(tmp_path / "none"), stdin='{"query":"q",'
                  '"chunks":["a"]}')
    assert r.returncode == 2 and "crossrank export" in r.stderr and "Traceback" not in r.stderr


def test_info_summarises_the_export(tiny_dir: Path) -> None:
    r = crossrank("info", str(tiny_dir))
    assert r.returncode == 0, r.stderr
    assert "STAND-IN" in r.stdout and "int8" in r.stdout and "this CPU" in r.stdout
    assert "int8 check  passed on this CPU: 32 pairs" in r.stdout
    assert "int8 check" not in crossrank("info", str(tiny_dir), "--no-check").stdout
    j = json.loads(crossrank("info", str(tiny_dir), "--json").stdout)
    assert j["variants"]["fp32"]["shipped"] is True
    assert j["variants"]["int8"]["recipe"]["isa"] in ("avx512_vnni", "avx2", "arm64")
    assert j["int8_check"]["status"] == "passed"


def test_serve_on_a_busy_port_fails_before_loading(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        # the model dir does not exist: the port is checked first, so the port is what it names
        r = crossrank("serve", "--model-dir", str(tmp_path / "none"), "--port", str(port))
    assert r.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr and "Traceback" not in r.stderr


def test_serve_offline_without_a_model_says_what_to_do(tmp_path: Path) -> None:
    r = crossrank("serve", "--models-root", str(tmp_path), "--port", str(free_port()))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "No model to serve. Offline?" in r.stderr and "--stand-in" in r.stderr
    # a wrong path is not an offline problem: no such footer
    r = crossrank("serve", "--model", str(tmp_path / "nope"), "--models-root", str(tmp_path),
                  "--port", str(free_port()))
    assert r.returncode == 2 and "No such checkpoint directory" in r.stderr
    assert "Offline?" not in r.stderr


def test_help_and_version_import_nothing_heavy() -> None:
    code = ("import sys\nfrom crossrank.cli import main\n"
            "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('onnxruntime', 'numpy', 'torch', 'tokenizers', 'starlette')"
            " if m in sys.modules]\nprint('HEAVY', heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert "crossrank 0.1.0" in r.stdout and "HEAVY []" in r.stdout, r.stdout + r.stderr


def test_info_shows_the_int8_gate_against_its_bounds() -> None:
    # A verdict near its bounds can change with a re-export (docs/int8.md): `crossrank info`
    # shows each check set's figures beside the bounds, and the cascade's error bound.
    from crossrank.cli import gate_lines

    j = {"clear_misses": 1, "widest_swap": 0.111, "worst_graded_ndcg": 0.998,
         "quality_kept": 1.012, "quality_kept_by_chance": 1.0075, "quality_kept_chance_p": 0.596}
    ver = {"spearman": 0.99, "passed": False, "bound": "clear misses (fp32 gap > 0.1 x std) <= 0",
           "ranking": {**j, "quality_kept": None},
           "held_out": j, "error": {"pairs": 1664, "mean_abs": 0.08, "max_abs": 0.4,
                                    "bound": 0.6}}
    lines = gate_lines(ver)
    assert lines[0].startswith("int8 gate   REFUSED") and "0.1 x std" in lines[0]
    assert "ranking   clear misses 1, widest swap 0.111 x std" in lines[1]
    assert lines[1].endswith("quality kept not judged")
    assert lines[2].endswith("quality kept 1.012 (chance 1.008, p 0.60)")
    assert lines[3] == ("int8 error  mean 0.080, max 0.400 logits on 1664 check pairs; the "
                        "cascade's bound 0.600")
    assert gate_lines({"spearman": 0.97, "passed": False}) == []  # a stand-in: recorded only
    # a hand-edited manifest with no numbers where numbers belong: "n/a", never a traceback
    odd = {"passed": True, "held_out": {"clear_misses": 0, "worst_graded_ndcg": None,
                                        "quality_kept": "x"}, "error": {"bound": "?"}}
    assert gate_lines(odd)[1].endswith("worst graded NDCG@10 n/a, quality kept n/a")
    assert "0.1 x std" in gate_lines(odd)[0]  # no recorded bounds: today's, from the gate
    assert gate_lines(odd)[2].startswith("int8 error  mean n/a")
