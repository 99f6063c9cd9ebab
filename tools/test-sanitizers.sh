#!/usr/bin/env bash
# Build iq1q's native code with AddressSanitizer and UndefinedBehaviorSanitizer and run
# the whole test suite over it (every backend this machine supports, the subprocess and
# entry-point tests included: they inherit the preload). Any report fails the run:
# ASan aborts on its first error and UBSan is built not to recover.
#
#   bash tools/test-sanitizers.sh [pytest args]
#
# The build is made in a copy of the tree under $WORK (default build/sanitizers, git-ignored), so
# the tree's own build stays as it is; PYTHONPATH puts the copy ahead of an installed iq1q.
# The test dependencies (and the example plugin, for the entry-point tests) must already
# be installed, as .ci/run does first.
set -euo pipefail
PROJ=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$PROJ/build/sanitizers}  # the copy leaves ./build out
CC=${CC:-gcc}
SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
step() { echo "[sanitizers +${SECONDS}s] $*"; }

step "copy of the tree in $WORK/src"
rm -rf "$WORK/src" && mkdir -p "$WORK/src"
tar -C "$PROJ" --exclude=./.git --exclude=./build --exclude=./benchmarks/ikbench/build --exclude='*.so' --exclude='./kernels/*.c' -cf - . \
    | tar -C "$WORK/src" -xf -

step "build with $SAN"
# an in-place build needs the build requirements here (pip's own builds isolate them)
python3 -m pip install -q $(cd "$PROJ" && python3 -c \
    "import tomllib; print(' '.join(tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires']))")
(cd "$WORK/src" && CC="$CC" CFLAGS="$SAN" LDFLAGS="$SAN" python3 setup.py -q build_ext --inplace >/dev/null)

# Python itself is not instrumented: the runtimes come first through LD_PRELOAD. Leak
# checking is off because CPython frees little at exit (our own buffers are freed by
# numpy or by the kernels before they return; tests/test_memory.py watches them).
export LD_PRELOAD="$($CC -print-file-name=libasan.so) $($CC -print-file-name=libubsan.so)"
# reports go to files: pytest captures stderr, and an aborted test would take them along
REPORTS=$WORK/reports
rm -rf "$REPORTS" && mkdir -p "$REPORTS"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:log_path=$REPORTS/asan
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$REPORTS/ubsan
export PYTHONPATH="$WORK/src${PYTHONPATH:+:$PYTHONPATH}"
step "pytest with the sanitizer runtimes preloaded"
status=0
(cd "$WORK/src" && python3 -c "import iq1q, sys; assert iq1q.__file__.startswith('$WORK/src'), iq1q.__file__" \
    && python3 -m pytest -q -p no:cacheprovider "${@:-tests}") || status=$?
if compgen -G "$REPORTS/*" >/dev/null; then
    step "sanitizer reports:"
    cat "$REPORTS"/*
    exit 1
fi
[ "$status" = 0 ] || { step "pytest failed ($status)"; exit "$status"; }
step "no sanitizer reports"
