"""Where the ik_llama.cpp harness (benchmarks/ikbench) builds things: the one place the
tests and the benchmarks look them up.

The build folder is $IQ1Q_IKBUILD, by default benchmarks/ikbench/build (git-ignored).
benchmarks/ikbench/build.sh checks out the ik_llama.cpp named by $IK_LLAMA_SRC there and
builds ikbench and machine_probe; build-tools.sh adds ik's llama-quantize, llama-perplexity
and llama-imatrix; tests/ik_nofma_quantize.sh adds nofma/llama-quantize. Standard library
only: the benchmarks import it without pytest."""

from __future__ import annotations

import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_VAR = "IQ1Q_IKBUILD"
SOURCE_VAR = "IK_LLAMA_SRC"
HARNESS = "benchmarks/ikbench"
DEFAULT_BUILD = REPO / HARNESS / "build"
# in the build folder: the name of the cmake build dir that build-tools.sh built the tools in
TOOLS_DIR_FILE = "tools-build-dir.txt"


def build_dir() -> Path:
    """$IQ1Q_IKBUILD, or the default folder (empty counts as unset, as in the scripts)."""
    return Path(os.environ.get(BUILD_VAR) or DEFAULT_BUILD)


def supported() -> bool:
    """The harness builds for x86-64 only (-march=native, x86 intrinsics in bench.c)."""
    return platform.machine() in ("x86_64", "AMD64")


def ikbench() -> Path:
    return build_dir() / "ikbench"


def machine_probe() -> Path:
    return build_dir() / "machine_probe"


def _executable(p: Path) -> Path | None:
    return p if p.is_file() and os.access(p, os.X_OK) else None


def tool(name: str) -> Path | None:
    """One of ik's tools (llama-quantize, llama-perplexity, llama-imatrix), if built."""
    if not supported():
        return None
    root = build_dir()
    try:
        names = [(root / TOOLS_DIR_FILE).read_text().strip()]
    except OSError:
        names = ["build", "build-tools"]
    for n in names:
        if n and (p := _executable(root / n / "bin" / name)):
            return p
    return None


def nofma_quantize() -> Path | None:
    """ik's llama-quantize with its quantizers built -ffp-contract=off, if built."""
    return _executable(build_dir() / "nofma" / "llama-quantize") if supported() else None


def not_built(what: str = "ik_llama.cpp", script: str = f"{HARNESS}/build.sh") -> str:
    """Why `what` is missing and how to build it (script: the one that builds it)."""
    if not supported():
        return f"{what}: the ik_llama.cpp harness ({HARNESS}) builds for x86-64 only"
    return (f"{what} is not built in {shown(build_dir())}: set {SOURCE_VAR} to a clone of "
            f"ik_llama.cpp and run {script} (build folder: ${BUILD_VAR}, default {shown(DEFAULT_BUILD)})")


def shown(path: str | os.PathLike) -> str:
    """path relative to the repository when it is inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)
