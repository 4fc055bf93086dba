"""Search spaces: the op registry, the YAML space schema and policy data.

Pure data: nothing here imports Ray or torch.
"""

from __future__ import annotations

import os

# albumentations' import otherwise asks PyPI for a newer release (a network call).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
