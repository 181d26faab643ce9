"""python -m crossrank.runtime: the same as `crossrank serve`."""

from __future__ import annotations

import sys

from crossrank.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
