"""`python -m search` is `python -m search.run`."""

from __future__ import annotations

import sys

from search.run import main

sys.exit(main())
