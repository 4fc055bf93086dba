"""`python -m search.evaluate`: the evaluation command line."""

from __future__ import annotations

import sys

from search.evaluate.cli import main

sys.exit(main())
