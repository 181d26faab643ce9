"""CLI: python -m runtime [--model-dir DIR] [--port 8000] ... (flags, then CROSSRANK_* env)."""

from __future__ import annotations

import logging
import sys

from crossrank.runtime.errors import CrossrankError


def main(argv: list[str] | None = None) -> int:
    from crossrank.runtime import settings as settings_mod

    try:
        s = settings_mod.build(argv)
    except CrossrankError as exc:
        print(f"crossrank: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=s.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: "
                        "%(message)s", datefmt="%H:%M:%S")
    import uvicorn

    from crossrank.runtime.scorer import Scorer
    from crossrank.runtime.server import create_app

    try:
        # Load and check everything before binding the port: a damaged model dir fails here.
        scorer = Scorer.from_dir(
            s.model_dir, variant=s.variant, provider=s.provider, threads=s.threads or None,
            token_budget=s.token_budget or None, max_rows=s.max_rows or None,
            spin=bool(s.spin), pipeline={"on": True, "off": False}.get(s.pipeline),
        )
    except CrossrankError as exc:
        print(f"crossrank: cannot start: {exc}", file=sys.stderr)
        return 2
    app = create_app(scorer, s)
    config = uvicorn.Config(
        app, host=s.host, port=s.port, log_level=s.log_level,
        access_log=s.log_level == "debug",
        limit_concurrency=s.max_connections,
        timeout_keep_alive=int(s.keepalive_timeout_s),
        timeout_graceful_shutdown=int(s.graceful_shutdown_s),
        h11_max_incomplete_event_size=16 * 1024,  # bounds header size
        server_header=False,
    )
    server = uvicorn.Server(config)
    if s.host not in ("127.0.0.1", "localhost", "::1") and not s.api_key:
        logging.getLogger(__name__).warning(
            "listening on %s without an API key: anyone who can reach it can use it", s.host)
    server.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
