from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import TinyPair, make_tiny_pair  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``$SEED_DATA_DIR`` or ``../shared/data`` next to the project root."""
    return Path(os.environ.get("SEED_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set SEED_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """Tiny byte-vocabulary target + noisy-copy draft, saved to a temp dir."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny"), vocab="byte", seed=0)


@pytest.fixture(scope="session")
def tiny_small_vocab_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """Tiny 16-token-vocabulary pair for distribution tests."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny16"), vocab="16", seed=1, noise=0.2)
