"""The standalone C tests of the x86 kernels (tests/c/), built and run here.

test_x86_gemm.c runs the GEMM of kernels/x86.h against the reference GEMM for
all 16 pairs. Built with IQ1Q_X86_EMULATE_VNNI it runs the AVX-512 backend's
code path with vpdpbusd/vpdpwssd emulated exactly, so that path is tested on
machines without AVX-512 too; where the CPU has AVX-512 VNNI it also runs with
the real instructions. test_x86_activations.c checks the SIMD activation
quantizers' bytes against the reference on many generated inputs.
"""

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

import iq1q
from iq1q.builtin_backends import avx2, avx512

ROOT = Path(__file__).resolve().parent.parent
STRICT = ["-O2", "-std=c11", "-ffp-contract=off", "-fno-fast-math"]
AVX2 = ["-mavx2", "-mfma", "-mf16c"]
AVX512 = AVX2 + ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512vnni"]


def _compiler() -> str:
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    if not shutil.which(cc):
        pytest.skip(f"no C compiler ({cc})")
    return cc


def _build_and_run(tmp_path, source: str, flags: list[str]) -> str:
    exe = tmp_path / Path(source).stem
    subprocess.run([_compiler(), *STRICT, *flags, f"-I{ROOT / 'kernels'}", str(ROOT / "tests" / "c" / source),
                    "-o", str(exe), "-lm", "-lpthread"], check=True, capture_output=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), last
    return last


@pytest.fixture
def needs_avx2():
    if not iq1q.cpu.has(*avx2.FEATURES):
        pytest.skip("this CPU cannot run AVX2 code")


@pytest.mark.parametrize("variant,flags", [
    ("avx2", AVX2),
    ("avx512-path, VNNI emulated", AVX2 + ["-DIQ1Q_X86_EMULATE_VNNI"]),
])
def test_gemm_against_ref(tmp_path, needs_avx2, variant, flags):
    _build_and_run(tmp_path, "test_x86_gemm.c", flags)


def test_gemm_against_ref_with_real_vnni(tmp_path):
    if not iq1q.cpu.has(*avx512.FEATURES):
        pytest.skip("this CPU has no AVX-512 VNNI")
    _build_and_run(tmp_path, "test_x86_gemm.c", AVX512)


def test_activation_bytes_against_ref(tmp_path, needs_avx2):
    _build_and_run(tmp_path, "test_x86_activations.c", AVX2)
