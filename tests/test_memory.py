"""Memory: repeated calls keep resident memory flat, and a matmul's peak stays within its
output, its quantized activations and a small workspace (benchmarks/bench_memory.py
measures the same at full size: 10,000 matmuls, 100 quantizations of 4096 x 4096).

Linux only: resident memory is read from /proc/self/status.
"""

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import iq1q

STATUS = Path("/proc/self/status")
MiB = 1 << 20

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


def python_peak(fn) -> int:
    """Peak bytes that Python and numpy allocate while fn runs (tracemalloc; numpy reports
    its buffers to it). Resident memory cannot show this: pages the worker threads touch
    reach the process's counters late. The kernels' own malloc'd scratch is not seen here:
    its size is a formula of the shapes (kernels/simd_gemm.h), stated in the tests."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_many_small_matmuls_keep_memory_flat(rng):
    W = iq1q.quantize(rng.standard_normal((64, 256)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal((4, 256)).astype(np.float32)
    qa = iq1q.quantize_activations(x, "q8_0")
    calls = [lambda: iq1q.matmul(x, W), lambda: iq1q.matmul(x, W, activation="q8_1", overflow="warn"),
             lambda: iq1q.matmul(qa, W, threads=2), lambda: iq1q.quantize_activations(x, "q8_k128")]
    for _ in range(100):  # warm-up: caches, the worker pool's threads, allocator arenas
        for c in calls:
            c()
    start = rss()
    for _ in range(500):
        for c in calls:
            c()
    assert rss() - start < 2 * MiB, f"grew by {(rss() - start) / MiB:.2f} MiB over 2000 calls"


def test_repeated_quantization_keeps_memory_flat(rng):
    w = rng.standard_normal((128, 1024)).astype(np.float32)
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
    M, N, K = 128, 256, 2048
    W = iq1q.quantize(rng.standard_normal((N, K)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal((M, K)).astype(np.float32)
    iq1q.matmul(x, W, backend=backend, threads=2)
    output = M * N * 4
    activations = M * iq1q.format_info("q8_k128").row_size(K)
    peak = python_peak(lambda: iq1q.matmul(x, W, backend=backend, threads=2))
    # besides those two: no copy of x, W or y; a few KiB of Python objects
    assert peak <= output + activations + 64 * 1024, (
        f"peak {peak / MiB:.2f} MiB > output {output / MiB:.2f} + activations {activations / MiB:.2f} MiB")


@pytest.mark.parametrize("backend", [b.name for b in iq1q.backends() if b.available and b.origin == "builtin"])
def test_a_tensor_holds_its_ggml_bytes_alone_until_prepared(rng, backend):
    """matmul keeps nothing with a tensor: resident memory after the first matmuls of fresh
    tensors grows by far less than their bytes. prepare() keeps the backend's layout beside
    them (the SIMD tiles: 2.5 bits per weight), and release() gives it back."""
    w = rng.standard_normal((1024, 4096)).astype(np.float32)
    x = rng.standard_normal((4, 4096)).astype(np.float32)
    for fmt in iq1q.WEIGHT_FORMATS:
        W = iq1q.quantize(w, fmt)
        # fresh copies of the bytes, resident before the matmuls (quantizing each anew took
        # minutes under qemu)
        tensors = [iq1q.QuantizedTensor.from_bytes(W.tobytes(), fmt, W.shape) for _ in range(8)]
        nbytes = sum(t.nbytes for t in tensors)
        iq1q.matmul(x, iq1q.quantize(w[:256], fmt), backend=backend)  # the call's own buffers, once
        start = rss()
        for t in tensors:
            iq1q.matmul(x, t, backend=backend)
        assert rss() - start <= 0.1 * nbytes, (fmt, rss() - start, nbytes)
        assert all(t.prepared_bytes == 0 for t in tensors)
        for t in tensors:
            t.prepare(backend=backend)
        held = sum(t.prepared_bytes for t in tensors)
        assert held == 0 if backend == "ref" else held > nbytes  # ref has no layout of its own
        for t in tensors:
            t.release()
        assert sum(t.prepared_bytes for t in tensors) == 0
