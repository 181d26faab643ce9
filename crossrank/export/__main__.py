"""python -m crossrank.export: the same as `crossrank export`."""

from __future__ import annotations

import sys

from crossrank.cli import main

sys.exit(main(["export", *sys.argv[1:]]))
