"""Shared test settings: quiet TensorFlow, and the location of the real data shipped beside the repo."""
import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_FLICKR8K = REPO.parent / "shared" / "data" / "flickr8k"


@pytest.fixture
def shared_flickr8k() -> Path:
    if not (SHARED_FLICKR8K / "Flickr8k.token.txt").is_file():
        pytest.skip(f"real Flickr8k captions not found at {SHARED_FLICKR8K}")
    return SHARED_FLICKR8K
