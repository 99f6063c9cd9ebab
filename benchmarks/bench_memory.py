"""Resident memory of iq1q under repetition, and the peak of one matmul (Linux).

    python benchmarks/bench_memory.py            # 10,000 matmuls, 100 quantizations of 4096 x 4096
    python benchmarks/bench_memory.py --quick    # 2,000 and 10

Prints the resident memory after a warm-up and after the runs, the growth, and the peak
of a large matmul beside what it must hold (output + quantized activations) and the
kernels' scratch (per activation row an int16 per 8 values and a float per block). The smaller versions of these checks are tests/test_memory.py.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_memory import MiB, python_peak, rss  # noqa: E402  (one way to measure)

import iq1q  # noqa: E402
from iq1q.report import table  # noqa: E402


def growth(label: str, fn, warmup: int, runs: int) -> list[str]:
    for _ in range(warmup):
        fn()
    start, t0 = rss(), time.perf_counter()
    for _ in range(runs):
        fn()
    end = rss()
    return [label, str(runs), f"{start / MiB:.1f}", f"{end / MiB:.1f}", f"{(end - start) / MiB:+.2f}",
            f"{time.perf_counter() - t0:.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_matmul, n_quant = (2000, 10) if args.quick else (10_000, 100)
    rng = np.random.default_rng(0)

    W = iq1q.quantize(rng.standard_normal((256, 1024)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal((8, 1024)).astype(np.float32)
    big = rng.standard_normal((4096, 4096)).astype(np.float32)
    im = rng.uniform(0, 1, 4096).astype(np.float32)
    rows = [growth("matmul 8 x 1024 by 256 x 1024 iq1_s_r4", lambda: iq1q.matmul(x, W), 500, n_matmul),
            growth("quantize 4096 x 4096 iq1_s_r4 (imatrix)", lambda: iq1q.quantize(big, "iq1_s_r4", imatrix=im),
                   2, n_quant)]
    print(table(["what", "runs", "RSS after warm-up MiB", "RSS after MiB", "growth MiB", "time s"],
                            rows))

    print()
    M, N, K = 512, 4096, 4096
    Wbig = iq1q.quantize(big[:N], "iq1_s_r4")
    xs = rng.standard_normal((M, K)).astype(np.float32)
    out = M * N * 4
    acts = M * iq1q.format_info("q8_k128").row_size(K)
    work = M * (K // 8) * 2 + M * (K // 128) * 4
    prow = []
    for b in (b.name for b in iq1q.backends() if b.available):
        iq1q.matmul(xs, Wbig, backend=b)  # a first call: any one-time work out of the peak
        peak = python_peak(lambda: iq1q.matmul(xs, Wbig, backend=b))
        prow.append([b, f"{peak / MiB:.1f}", f"{out / MiB:.1f}", f"{acts / MiB:.1f}", f"{work / MiB:.2f}",
                     f"{(peak - out - acts) / MiB:+.2f}"])
    print(f"peak of one matmul, M={M} x K={K} by N={N} iq1_s_r4 (q8_k128), default threads; Python and numpy "
          f"allocations (tracemalloc) and, beside them, the kernels' malloc'd scratch by its formula:")
    print(table(["backend", "peak MiB", "output MiB", "q8_k128 activations MiB",
                 "native scratch MiB", "peak - output - activations MiB"], prow))


if __name__ == "__main__":
    main()
