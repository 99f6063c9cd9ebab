"""The standalone C tests of the SIMD kernels (tests/c/), built and run here.

test_simd_gemm.c runs the GEMM of kernels/simd.h against the reference GEMM for
all 16 pairs; test_simd_activations.c checks the SIMD activation quantizers'
bytes against the reference on many generated inputs. Each is built for every
kernel variant this machine can run:

- x86-64: AVX2, the AVX-512 path with vpdpbusd/vpdpwssd emulated exactly (so
  that path is tested on machines without AVX-512), and real AVX-512 VNNI where
  the CPU has it;
- AArch64 NEON, with and without dotprod: cross-compiled and run under
  qemu-user on emulated CPUs that do and do not have sdot, where the cross
  compiler and qemu are installed (tools/test-aarch64.sh installs them).
"""

import os
import platform
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

import iq1q
from iq1q.builtin_backends import avx2, avx512

ROOT = Path(__file__).resolve().parent.parent
STRICT = ["-O2", "-std=c11", "-ffp-contract=off", "-fno-fast-math"]
# as setup.py builds the kernel modules
AVX2 = ["-mavx2", "-mfma", "-mf16c"]
AVX512 = AVX2 + ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"]
NEON = ["-march=armv8-a"]
NEON_DOTPROD = ["-march=armv8.2-a+dotprod"]
SOURCES = ("test_simd_gemm.c", "test_simd_activations.c")

# the cross toolchain and emulator of tools/test-aarch64.sh (Debian packages)
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64-static"
CROSS_SYSROOT = Path("/usr/aarch64-linux-gnu")


def _compiler() -> str:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    return cc


def _build(tmp_path, cc: str, source: str, flags: list[str]) -> Path:
    exe = tmp_path / Path(source).stem
    subprocess.run([cc, *STRICT, *flags, f"-I{ROOT / 'kernels'}", str(ROOT / "tests" / "c" / source),
                    "-o", str(exe), "-lm", "-lpthread"], check=True, capture_output=True)
    return exe


def _run(cmd: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _assert_passed(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), last
    return last


def _build_and_run(tmp_path, source: str, flags: list[str]) -> str:
    return _assert_passed(_run([str(_build(tmp_path, _compiler(), source, flags))]))


@pytest.fixture
def needs_avx2():
    if not iq1q.cpu.has(*avx2.FEATURES):
        pytest.skip("this CPU cannot run AVX2 code")


@pytest.mark.parametrize("variant,flags", [
    ("avx2", AVX2),
    ("avx512-path, VNNI emulated", AVX2 + ["-DIQ1Q_X86_EMULATE_VNNI"]),
])
def test_gemm_against_ref(tmp_path, needs_avx2, variant, flags):
    _build_and_run(tmp_path, "test_simd_gemm.c", flags)


def test_gemm_against_ref_with_real_vnni(tmp_path):
    if not iq1q.cpu.has(*avx512.FEATURES):
        pytest.skip("this CPU has no AVX-512 VNNI")
    _build_and_run(tmp_path, "test_simd_gemm.c", AVX512)


def test_activation_bytes_against_ref(tmp_path, needs_avx2):
    _build_and_run(tmp_path, "test_simd_activations.c", AVX2)


# ---- NEON: natively on AArch64, under qemu-user elsewhere ---------------------------

@pytest.mark.parametrize("variant,flags,features", [
    ("neon + dotprod", NEON_DOTPROD, ("neon", "dotprod")),
    ("neon without dotprod", NEON, ("neon",)),
])
@pytest.mark.parametrize("source", SOURCES)
def test_neon_against_ref_natively(tmp_path, source, variant, flags, features):
    if platform.machine() not in ("aarch64", "arm64") or not iq1q.cpu.has(*features):
        pytest.skip(f"this CPU cannot run {variant} code")
    _build_and_run(tmp_path, source, flags)


@pytest.fixture
def cross():
    """The aarch64 cross compiler, or a skip where it or qemu-user is missing."""
    if not (shutil.which(CROSS_CC) and shutil.which(QEMU) and CROSS_SYSROOT.is_dir()):
        pytest.skip(f"needs {CROSS_CC}, {QEMU} and {CROSS_SYSROOT} (tools/test-aarch64.sh installs them)")
    return CROSS_CC


def _qemu(exe: Path, cpu: str) -> subprocess.CompletedProcess:
    return _run([QEMU, "-L", str(CROSS_SYSROOT), str(exe)], env=dict(os.environ, QEMU_CPU=cpu))


# each variant on an emulated CPU that has just what it needs
@pytest.mark.parametrize("variant,flags,cpu", [
    ("neon + dotprod", NEON_DOTPROD, "neoverse-n1"),
    ("neon without dotprod", NEON, "cortex-a72"),
])
@pytest.mark.parametrize("source", SOURCES)
def test_neon_against_ref_under_qemu(tmp_path, cross, source, variant, flags, cpu):
    _assert_passed(_qemu(_build(tmp_path, cross, source, flags), cpu))


def test_qemu_cortex_a72_has_no_sdot(tmp_path, cross):
    """What makes the cortex-a72 runs a proof of the runtime choice: there, the
    dotprod kernels die with SIGILL."""
    out = _qemu(_build(tmp_path, cross, "test_simd_gemm.c", NEON_DOTPROD), "cortex-a72")
    assert out.returncode in (-4, 128 + 4), (out.returncode, out.stderr[-500:])
