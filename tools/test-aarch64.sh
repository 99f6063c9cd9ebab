#!/usr/bin/env bash
# Build iq1q for aarch64 on this x86-64 Debian machine and run its test suite under
# qemu-user on emulated CPUs with and without the dot-product instructions:
#
#   max          dotprod + i8mm + fp16: the neon and neon_plain backends both serve
#   neoverse-n1  dotprod
#   cortex-a72   plain ARMv8.0 NEON: sdot is SIGILL, only neon_plain (and ref) may run
#
#   bash tools/test-aarch64.sh          (as root: installs Debian packages when missing)
#
# Steps (everything from Debian's and PyPI's archives, cached under $WORK):
#   1. Debian's aarch64 cross compiler, qemu-user-static and mmdebstrap;
#   2. a minimal arm64 Debian root with python3.11 and its headers, extracted with
#      mmdebstrap --variant=extract (no chroot, no binfmt, no maintainer scripts);
#   3. the project cross-compiled into a linux_aarch64 wheel with crossenv: setup.py
#      picks the kernel modules by the target platform and setuptools takes CC/LDSHARED;
#   4. that wheel with its test extra (aarch64 wheels from PyPI) into a target folder;
#   5. per CPU model, the models side by side: pytest under qemu-aarch64-static (max runs
#      every backend's parametrised tests, neoverse-n1 those of ref and neon, cortex-a72
#      those of ref and neon_plain: IQ1Q_TEST_BACKENDS), then
#      `iq1q info` (the kernel table of the default choice) and `iq1q demo` with
#      IQ1Q_BACKEND=neon where the CPU has dotprod, and with IQ1Q_BACKEND=neon_plain on
#      cortex-a72; beside them, the C tests of the NEON kernels (tests/test_simd_c.py),
#      cross-compiled and run under the same qemu by the host's pytest (so this tree must
#      be installed on the host too, as .ci/run does first).
#
# Environment: WORK (cache, default build/aarch64, git-ignored), QEMU_CPUS (default the three above),
# PYTEST_ARGS (default: the suite, quiet).
set -euo pipefail
PROJ=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$PROJ/build/aarch64}
QEMU_CPUS=${QEMU_CPUS:-"max neoverse-n1 cortex-a72"}
# test_grid.py regenerates the grid from the source tree's tools; test_simd_c.py compiles
# C tests, which the emulated interpreter cannot run (it has no binfmt for aarch64);
# test_calibrate.py runs whole tiny models through calibration, Python and portable C that
# test_hessian.py covers on aarch64, and takes 7 minutes emulated
PYTEST_ARGS=${PYTEST_ARGS:-"-q -p no:cacheprovider --durations=8 --hypothesis-profile=emulated tests
    --ignore=tests/test_grid.py --ignore=tests/test_simd_c.py --ignore=tests/test_calibrate.py"}
SUITE=bookworm
PYV=3.11
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$WORK"
step() { echo "[aarch64 +${SECONDS}s] $*"; }

step "Debian packages: cross compiler, qemu-user-static, mmdebstrap"
if ! command -v aarch64-linux-gnu-gcc >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
   || ! command -v mmdebstrap >/dev/null; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
        qemu-user-static mmdebstrap >/dev/null
fi

ROOT=$WORK/rootfs-arm64
PY=$ROOT/usr/bin/python$PYV
if [ ! -x "$PY" ]; then
    step "arm64 root with python$PYV"
    # the archive this machine's apt already uses
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [ -n "$mirror" ] || mirror=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    rm -rf "$ROOT"
    mmdebstrap --quiet --variant=extract --arch=arm64 \
        --include="python$PYV,libpython$PYV-dev,libstdc++6" "$SUITE" "$ROOT" ${mirror:+"$mirror"} </dev/null
fi

step "host helper venv with crossenv"
[ -x "$WORK/venv/bin/python" ] || python3 -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q --upgrade pip crossenv

step "cross-compile iq1q"
[ -x "$WORK/xenv/bin/cross-pip" ] || "$WORK/venv/bin/python" -m crossenv "$PY" "$WORK/xenv" >/dev/null
"$WORK/xenv/bin/build-pip" install -q cython setuptools wheel numpy
"$WORK/xenv/bin/cross-pip" install -q setuptools wheel
rm -rf "$WORK/dist"
(
    set +u; . "$WORK/xenv/bin/activate"; set -u
    cross-expose cython numpy 2>/dev/null || true
    CC="aarch64-linux-gnu-gcc --sysroot=$ROOT" LDSHARED="aarch64-linux-gnu-gcc --sysroot=$ROOT -shared" \
        pip wheel -q --no-build-isolation --no-deps "$PROJ" -w "$WORK/dist"
)

step "the wheel and its test extra, for aarch64"
SITE=$WORK/site-arm64
rm -rf "$SITE"
wheel=$(ls "$WORK"/dist/iq1q-*.whl)
"$WORK/venv/bin/pip" install -q --target "$SITE" --only-binary=:all: --python-version "$PYV" \
    --implementation cp --abi "cp${PYV/./}" --platform linux_aarch64 --platform manylinux_2_28_aarch64 \
    "$wheel[test]"

# a folder outside the source tree, so that the x86 build there cannot shadow the wheel
RUN=$WORK/run
rm -rf "$RUN" && mkdir -p "$RUN" && cp -r "$PROJ/tests" "$PROJ/docs" "$RUN/"
emulate() { (cd "$RUN" && PYTHONPATH="$SITE" qemu-aarch64-static -L "$ROOT" "$PY" "$@"); }

# One CPU model's checks, into its own log (the models run side by side).
check_cpu() {
    local cpu=$1 backend=neon
    [ "$cpu" != cortex-a72 ] || backend=neon_plain
    export QEMU_CPU=$cpu
    # max runs every backend's parametrisations; the others the reference and the one
    # backend each one exists to prove (its default), which halves their kernel tests;
    # `iq1q quantize` and `iq1q perplexity` (Python over the kernels) run on max only
    local only_max=""
    [ "$cpu" = max ] || { export IQ1Q_TEST_BACKENDS=ref,$backend
                          only_max="--ignore=tests/test_model_quantize.py --ignore=tests/test_perplexity.py"; }
    echo "== pytest"
    emulate -m pytest $PYTEST_ARGS $only_max
    echo "== iq1q info"
    emulate -m iq1q info
    echo "== IQ1Q_BACKEND=$backend iq1q demo"
    IQ1Q_BACKEND=$backend emulate -m iq1q demo --rows 256 --cols 1024
}

step "side by side: pytest, iq1q info and demo per CPU model ($QEMU_CPUS); the NEON C tests on the host"
jobs=()
for cpu in $QEMU_CPUS; do
    check_cpu "$cpu" >"$WORK/$cpu.log" 2>&1 &
    jobs+=("$cpu:$!")
done
# the host's pytest (this tree's iq1q must be installed there) cross-compiles them and runs them under qemu
(cd "$PROJ" && python3 -m pytest -q -p no:cacheprovider tests/test_simd_c.py -k "neon or qemu") \
    >"$WORK/c-tests.log" 2>&1 &
jobs+=("c-tests:$!")
failed=""
for job in "${jobs[@]}"; do
    name=${job%%:*}
    if wait "${job##*:}"; then result=passed; else result=FAILED; failed="$failed $name"; fi
    step "$name: $result"
    cat "$WORK/$name.log"
done
[ -z "$failed" ] || { step "failed:$failed"; exit 1; }
step "aarch64 tests passed on: $QEMU_CPUS"
