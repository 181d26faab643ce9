"""python -m crossrank: the `crossrank` command."""

from __future__ import annotations

import sys

from crossrank.cli import main

sys.exit(main())
