"""matmul speed: y = x @ W.T for every (weight, activation) pair.

    python benchmarks/bench_matmul.py [--n 4096] [--k 4096] [--m 1 32] [--threads 1 2]
                                      [--backend ref] [--pairs iq1_s_r4:q8_k128 ...]

Prints time, weight GB/s (bytes of W read per second), GFLOP/s (2*M*N*K per second) and
the ratio to numpy's float32 BLAS x @ w.T of the same shape, measured in the same run.
A second table gives the cost of the fp16 overflow check matmul runs for q8_0/q8_1.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from timing import best_time

import iq1q
from iq1q import hazards
from iq1q.report import table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4096)
    p.add_argument("--k", type=int, default=4096)
    p.add_argument("--m", type=int, nargs="+", default=[1, 32])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--backend", default=None)
    p.add_argument("--pairs", nargs="*", help="weight:activation pairs (default: all 16)")
    args = p.parse_args()
    pairs = ([tuple(s.split(":")) for s in args.pairs] if args.pairs else
             [(w, a) for w in iq1q.WEIGHT_FORMATS for a in iq1q.ACTIVATION_FORMATS])
    rng = np.random.default_rng(0)
    w = rng.standard_normal((args.n, args.k)).astype(np.float32)
    weights = {f: iq1q.quantize(w, f) for f in {w_ for w_, _ in pairs}}
    print(f"N={args.n} K={args.k}, backend {iq1q.get_backend(args.backend)}, "
          f"{os.cpu_count()} CPUs; numpy {np.__version__} float32 x @ w.T as baseline\n")
    rows, checks = [], []
    for m in args.m:
        x = rng.standard_normal((m, args.k)).astype(np.float32)
        base = best_time(lambda: x @ w.T)
        for t in args.threads:
            for wf, af in pairs:
                W = weights[wf]
                dt = best_time(lambda: iq1q.matmul(x, W, activation=af, backend=args.backend,
                                                   threads=t, overflow="ignore"))
                rows.append([f"{wf} x {af}", m, t, f"{dt * 1e3:.3f}", f"{W.nbytes / dt / 1e9:.2f}",
                             f"{2 * m * args.n * args.k / dt / 1e9:.2f}", f"{base / dt:.2f}"])
            for af in ("q8_0", "q8_1"):
                if any(a == af for _, a in pairs):
                    W = weights[next(w_ for w_, a in pairs if a == af)]
                    full = best_time(lambda: iq1q.matmul(x, W, activation=af, threads=t,
                                                         backend=args.backend, overflow="raise"))
                    check = best_time(lambda: hazards.scan(x, af))
                    checks.append([af, m, t, f"{check * 1e3:.4f}", f"{full * 1e3:.3f}",
                                   f"{100 * check / full:.2f}%"])
        rows.append(["numpy float32 (baseline)", m, "blas", f"{base * 1e3:.3f}",
                     f"{w.nbytes / base / 1e9:.2f}", f"{2 * m * args.n * args.k / base / 1e9:.2f}", "1.00"])
    print(table(["pair", "M", "threads", "time ms", "W GB/s", "GFLOP/s", "vs numpy"], rows))
    if checks:
        print("\nfp16 overflow check inside matmul (overflow='raise')")
        print(table(["activation", "M", "threads", "check ms", "matmul ms", "share"], checks))


if __name__ == "__main__":
    main()
