"""Memory: repeated calls keep resident memory flat, and a matmul's peak stays within its
output, its quantized activations and a small workspace (benchmarks/bench_memory.py
measures the same at full size: 10,000 matmuls, 100 quantizations of 4096 x 4096).

Linux only: resident memory is read from /proc/self/status, and the peak is reset
through /proc/self/clear_refs.
"""

import ctypes
import os
from pathlib import Path

import numpy as np
import pytest

import iq1q

STATUS = Path("/proc/self/status")
MiB = 1 << 20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter

pytestmark = [
    pytest.mark.skipif(not STATUS.exists(), reason="needs Linux /proc"),
    # AddressSanitizer holds freed memory in quarantine (tools/test-sanitizers.sh)
    pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""), reason="meaningless under ASan"),
]


def _status_kib(field: str) -> int:
    for line in STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def rss() -> int:
    """Resident bytes now."""
    return 1024 * _status_kib("VmRSS")


def peak_since_reset(fn) -> int:
    """Peak resident bytes while fn runs, above the resident bytes before it."""
    # glibc raises its mmap threshold after freeing a large block, and later large buffers
    # then come from a heap that stays resident: fixed, a freed buffer leaves, and the peak
    # shows all that one call holds
    if mallopt := getattr(ctypes.CDLL(None), "mallopt", None):  # glibc's; absent elsewhere
        mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
    before = rss()
    fn()
    return 1024 * _status_kib("VmHWM") - before


def test_many_small_matmuls_keep_memory_flat(rng):
    W = iq1q.quantize(rng.standard_normal((64, 256)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal((4, 256)).astype(np.float32)
    qa = iq1q.quantize_activations(x, "q8_0")
    calls = [lambda: iq1q.matmul(x, W), lambda: iq1q.matmul(x, W, activation="q8_1", overflow="warn"),
             lambda: iq1q.matmul(qa, W, threads=2), lambda: iq1q.quantize_activations(x, "q8_k128")]
    for _ in range(200):  # warm-up: caches, the worker pool's threads, allocator arenas
        for c in calls:
            c()
    start = rss()
    for _ in range(1000):
        for c in calls:
            c()
    assert rss() - start < 2 * MiB, f"grew by {(rss() - start) / MiB:.2f} MiB over 4000 calls"


def test_repeated_quantization_keeps_memory_flat(rng):
    w = rng.standard_normal((1024, 1024)).astype(np.float32)
    im = rng.uniform(0, 1, 1024).astype(np.float32)
    for fmt in iq1q.WEIGHT_FORMATS:
        iq1q.quantize(w, fmt, imatrix=im)
    start = rss()
    for _ in range(3):
        for fmt in iq1q.WEIGHT_FORMATS:
            iq1q.quantize(w, fmt, imatrix=im).dequantize()
    assert rss() - start < 2 * MiB, f"grew by {(rss() - start) / MiB:.2f} MiB over 12 quantizations"


@pytest.mark.parametrize("backend", [b.name for b in iq1q.backends() if b.available and b.origin == "builtin"])
def test_matmul_peak_is_output_activations_and_a_small_workspace(rng, backend):
    M, N, K = 256, 2048, 4096
    W = iq1q.quantize(rng.standard_normal((N, K)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal((M, K)).astype(np.float32)
    iq1q.matmul(x, W, backend=backend, threads=2)  # the one-time repack, kept with W
    output = M * N * 4
    activations = M * iq1q.format_info("q8_k128").row_size(K)
    # the kernels' scratch: per activation row a float per block and an int16 per 8 values
    workspace = M * (K // 8) * 2 + M * (K // 128) * 4 + 1 * MiB
    peak = peak_since_reset(lambda: iq1q.matmul(x, W, backend=backend, threads=2))
    assert peak <= output + activations + workspace, (
        f"peak {peak / MiB:.1f} MiB > output {output / MiB:.1f} + activations {activations / MiB:.1f} "
        f"+ workspace {workspace / MiB:.1f} MiB")
