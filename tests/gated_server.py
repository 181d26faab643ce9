"""A real server process whose inference waits for a file: the CLI's serve path (the same socket,
uvicorn and SIGTERM handling) with the session wrapped, so tests can hold a request in flight
without depending on how fast the machine is.

    python -m tests.gated_server MODEL_DIR PORT GATE_DIR GRACEFUL_S

Each batch touches GATE_DIR/entered, then waits until GATE_DIR/open exists.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from crossrank.runtime import loader
from crossrank.runtime.core import batching
from crossrank.runtime.execution.engine import Runner
from crossrank.runtime.http.server import bind, serve
from crossrank.runtime.settings import Settings


class FileGatedSession:
    def __init__(self, inner: Runner, gate: Path) -> None:
        self.inner = inner
        self.gate = gate

    def run(self, batch: batching.Batch) -> np.ndarray:
        (self.gate / "entered").touch()
        while not (self.gate / "open").exists():
            time.sleep(0.01)
        return self.inner.run(batch)


def main() -> None:
    model_dir, port, gate, grace = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    settings = Settings(model_dir=model_dir, port=port, graceful_shutdown_s=float(grace))
    sock = bind(settings.host, settings.port)
    runtime = loader.load(replace(settings.runtime_config(), variant="fp32"),
                          runner=lambda open_session: FileGatedSession(open_session(), gate))
    serve(runtime, settings, sock)


if __name__ == "__main__":
    main()
