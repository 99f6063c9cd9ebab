"""Many Python threads calling matmul, quantize and quantize_activations at once, on
different formats, backends and thread counts: every result is bitwise the serial one.

The native side holds no mutable global state besides the worker pool (kernels/pool.h;
its own tests, with fork, are in test_pool.py) and the quantizer's grid tables, which
kernels/_ref.pyx builds once at import and only reads afterwards.
"""

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import iq1q

PYTHON_THREADS = 16
ROUNDS = 3
BACKENDS = [b.name for b in iq1q.backends() if b.available]


def _jobs(rng):
    """(name, callable) pairs covering every weight and activation format, every available
    backend and native thread counts 1-3; each callable returns bytes."""
    jobs = []
    for i, wfmt in enumerate(iq1q.WEIGHT_FORMATS):
        w = rng.standard_normal((64, 512)).astype(np.float32)
        imatrix = rng.uniform(0, 2, 512).astype(np.float32) if i % 2 else None
        W = iq1q.quantize(w, wfmt)
        for t in (1, 2, 3):
            jobs.append((f"quantize {wfmt} t{t}", lambda w=w, f=wfmt, im=imatrix, t=t:
                         iq1q.quantize(w, f, imatrix=im, threads=t).tobytes()))
        for (afmt, backend), t in itertools.product(itertools.product(iq1q.ACTIVATION_FORMATS, BACKENDS),
                                                    (1, 2, 3)):
            x = rng.standard_normal((int(rng.integers(1, 40)), 512)).astype(np.float32)
            jobs.append((f"matmul {wfmt} x {afmt} {backend} t{t}", lambda x=x, W=W, a=afmt, b=backend, t=t:
                         iq1q.matmul(x, W, activation=a, backend=b, threads=t).tobytes()))
    for afmt, backend in itertools.product(iq1q.ACTIVATION_FORMATS, BACKENDS):
        x = rng.standard_normal((33, 1024)).astype(np.float32)
        jobs.append((f"quantize_activations {afmt} {backend}", lambda x=x, a=afmt, b=backend:
                     iq1q.quantize_activations(x, a, backend=b, threads=2).tobytes()))
    return jobs


def test_concurrent_calls_are_bitwise_serial(rng):
    jobs = _jobs(rng)
    serial = [fn() for _, fn in jobs]
    order = [i for _ in range(ROUNDS) for i in rng.permutation(len(jobs))]
    with ThreadPoolExecutor(PYTHON_THREADS) as pool:
        results = list(pool.map(lambda i: (i, jobs[i][1]()), order))
    wrong = sorted({jobs[i][0] for i, got in results if got != serial[i]})
    assert not wrong, f"{len(wrong)} job(s) differ when run concurrently: {wrong[:5]}"
    assert len(results) == ROUNDS * len(jobs)
