"""The float work of a forward pass on Python threads (iq1q.models.parallel): results in
order, errors raised to the caller, nested calls, and fork().

The fork scenario runs in a fresh interpreter with a time limit, so a child waiting on the
parent's threads fails the test instead of hanging the suite."""

import subprocess
import textwrap
import threading

import pytest

from iq1q.models.parallel import pmap


def test_results_in_order_on_the_threads_asked_for():
    seen = set()
    lock = threading.Lock()

    def square(i):
        with lock:
            seen.add(threading.get_ident())
        return i * i

    assert pmap(square, list(range(50)), 3) == [i * i for i in range(50)]
    assert threading.get_ident() not in seen and 1 <= len(seen) <= 3
    seen.clear()
    assert pmap(square, [4, 5], 1) == [16, 25] and seen == {threading.get_ident()}


def test_an_error_reaches_the_caller():
    def fail(i):
        if i == 3:
            raise ValueError("piece 3 failed")
        return i

    with pytest.raises(ValueError, match="piece 3 failed"):
        pmap(fail, list(range(8)), 2)


def test_a_nested_pmap_runs_on_its_worker():
    """Every worker waiting on its inner pieces would deadlock the executor: inner calls run
    serially on the worker instead."""
    outer = pmap(lambda i: (threading.get_ident(), pmap(lambda j: (threading.get_ident(), i * j), [1, 2], 2)),
                 list(range(4)), 2)
    for ident, inner in outer:
        assert [t for t, _ in inner] == [ident, ident]
    assert [[v for _, v in inner] for _, inner in outer] == [[0, 0], [1, 2], [2, 4], [3, 6]]


def test_a_forked_child_gets_threads_of_its_own(python_subprocess):
    code = """
        import os
        from iq1q.models.parallel import pmap
        assert pmap(abs, [-1, -2, -3], 2) == [1, 2, 3]
        pid = os.fork()
        if pid == 0:
            os._exit(0 if pmap(abs, [-4, -5, -6], 2) == [4, 5, 6] else 1)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        print(pmap(abs, [-7, -8], 2))
    """
    try:
        out = subprocess.run([python_subprocess, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                             timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the forked child waited on its parent's threads")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[7, 8]"
