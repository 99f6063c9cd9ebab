"""The committed grid header is exactly what the generator makes from gguf's table."""

import importlib.util

import numpy as np
from conftest import ROOT


def _generator():
    spec = importlib.util.spec_from_file_location("gen_grid", ROOT / "tools" / "gen_grid.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_header_matches_generator():
    gen = _generator()
    assert (ROOT / "kernels" / "iq1q_grid.h").read_text() == gen.render()


def test_grid_facts_from_spec():
    # docs/spec.md §3.3: entry 1029 is the only zero vector, 0 is all -1, 2047 all +1, and the histogram
    lv = _generator().levels(_generator().grid_codes()).astype(int) - 1
    zero = np.flatnonzero(~lv.any(axis=1))
    assert zero.tolist() == [1029]
    assert (lv[0] == -1).all() and (lv[2047] == 1).all()
    assert [(lv == v).sum() for v in (0, -1, 1)] == [6649, 4875, 4860]
