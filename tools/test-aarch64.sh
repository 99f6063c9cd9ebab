#!/usr/bin/env bash
# Build iq1q for aarch64 and run its tests under qemu-user (see ../shared/neon/README.md).
# test_grid.py needs the source tree (the run uses an installed wheel); tests that start
# a fresh interpreter skip themselves under qemu-user.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
TEST_DEPS=${TEST_DEPS:-"numpy pluggy pytest gguf"} \
PYTEST_ARGS=${PYTEST_ARGS:-"-q tests --ignore=tests/test_grid.py"} \
    exec bash "$here/../shared/neon/aarch64-test.sh" "$here"
