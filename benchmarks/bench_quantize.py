"""Weight quantization speed and the first call's latency.

    python benchmarks/bench_quantize.py [--n 4096] [--k 4096] [--threads 1]

Prints ms per million weights for every weight format, with and without an imatrix, and
the ratio to iq1_s_r4 without imatrix (the baseline, measured in the same run; ik_llama.cpp
takes about 109 ms per million weights for it, 127 for iq1_m_r4, on this kind of machine),
then the time from a fresh interpreter's `import iq1q` to its first quantize(256x256).
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
from timing import best_time

import iq1q
from iq1q.report import table

FIRST_CALL = """
import time
t0 = time.perf_counter()
import numpy as np, iq1q
t1 = time.perf_counter()
iq1q.quantize(np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32), "{fmt}")
t2 = time.perf_counter()
print(t1 - t0, t2 - t1)
"""


BASELINE_FIRST = ("iq1_s_r4", "iq1_m_r4", "iq1_s", "iq1_m")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    w = rng.standard_normal((args.n, args.k)).astype(np.float32)
    imatrix = rng.uniform(0.1, 4.0, args.k).astype(np.float32)
    mw = w.size / 1e6
    rows, base = [], None
    for fmt in BASELINE_FIRST:
        for im in (None, imatrix):
            dt = best_time(lambda: iq1q.quantize(w, fmt, imatrix=im, threads=args.threads),
                           min_seconds=0, min_runs=2)
            base = base or dt  # the first row: iq1_s_r4 without imatrix
            rows.append([fmt, "yes" if im is not None else "no", f"{dt * 1e3:.0f}",
                         f"{dt * 1e3 / mw:.1f}", f"{w.nbytes / dt / 1e9:.3f}", f"{dt / base:.2f}"])
    print(f"{args.n}x{args.k} Gaussian float32, {args.threads} thread(s)\n")
    print(table(["format", "imatrix", "time ms", "ms / M weights", "input GB/s", "vs iq1_s_r4"], rows))
    print("\nFirst call in a fresh interpreter (seconds)")
    rows = []
    for fmt in iq1q.WEIGHT_FORMATS:
        out = subprocess.run([sys.executable, "-c", FIRST_CALL.format(fmt=fmt)], capture_output=True,
                             text=True, check=True).stdout.split()
        rows.append([fmt, f"{float(out[0]):.3f}", f"{float(out[1]):.3f}"])
    print(table(["format", "import iq1q", "first quantize 256x256"], rows))


if __name__ == "__main__":
    main()
