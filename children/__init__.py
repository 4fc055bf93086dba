"""What is trained: datasets and splits, child models, the training loop and the reward.

torch lives here; nothing in this package imports Ray or MLflow.
"""

from __future__ import annotations

import os

# albumentations' import otherwise asks PyPI for a newer release (a network call).
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
