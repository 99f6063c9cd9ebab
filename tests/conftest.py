import os
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the independent oracle (tests/oracle.py)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests start from the default backend choice and thread count."""
    for var in ("IQ1Q_BACKEND", "IQ1Q_NUM_THREADS"):
        monkeypatch.delenv(var, raising=False)
