"""The native worker pool (kernels/pool.h): many callers, many jobs, and fork().

Each scenario runs in a fresh interpreter with a time limit, so a lost
wake-up fails the test instead of hanging the suite.
"""

import subprocess
import textwrap

import pytest

LIMIT = 120  # seconds; each scenario takes well under 10 on two cores


def _run(python, code: str) -> str:
    try:
        out = subprocess.run([python, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                             timeout=LIMIT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the pool hung (no result after {LIMIT} s)")
    assert out.returncode == 0, out.stderr
    return out.stdout


SETUP = """
    import numpy as np, iq1q
    rng = np.random.default_rng(5)
    W = iq1q.quantize(rng.standard_normal((96, 256)).astype(np.float32), "iq1_s_r4")
    x = rng.standard_normal((3, 256)).astype(np.float32)
    want = iq1q.matmul(x, W, threads=1)
"""


def test_many_jobs_of_every_thread_count(python_subprocess):
    """Thousands of back-to-back jobs, with workers that start late, spin or sleep."""
    out = _run(python_subprocess, SETUP + """
    import time
    for i in range(3000):
        t = 1 + i % 5
        assert (iq1q.matmul(x, W, threads=t) == want).all(), (i, t)
        if i % 500 == 0:
            time.sleep(0.01)  # let the workers fall asleep
    print("ok")
    """)
    assert out.strip() == "ok"


def test_concurrent_python_threads(python_subprocess):
    """Jobs posted from several threads at once: one owns the pool, the others run
    serially; all get exactly the one-thread results."""
    out = _run(python_subprocess, SETUP + """
    from concurrent.futures import ThreadPoolExecutor
    def work(i):
        return all((iq1q.matmul(x, W, threads=2 + i % 3) == want).all() for _ in range(200))
    with ThreadPoolExecutor(8) as pool:
        print(all(pool.map(work, range(16))))
    """)
    assert out.strip() == "True"


def test_fork_after_parallel_work(python_subprocess):
    """A child forked after the parent used the pool builds its own and gets the same bits;
    the parent's pool still works afterwards."""
    out = _run(python_subprocess, SETUP + """
    import os
    assert (iq1q.matmul(x, W, threads=2) == want).all()
    pid = os.fork()
    if pid == 0:
        ok = all((iq1q.matmul(x, W, threads=2) == want).all() for _ in range(100))
        os._exit(0 if ok else 3)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), bool((iq1q.matmul(x, W, threads=2) == want).all()))
    """)
    assert out.split() == ["0", "True"]
