"""The iq1q command."""

import re
import subprocess

from iq1q.cli import main


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^ref\s+0\s+yes\s+16\s+builtin", out, re.M)
    assert re.search(r"^iq1_s_r4\s+\S+\s+\S+\s+\S+\s+\S+$", out, re.M)
    assert re.search(r"^q8_k128\s+150\s+128\s+140", out, re.M)


def test_demo_shows_the_pre_pr194_failure(capsys):
    assert main(["demo", "--rows", "64", "--cols", "256", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split() for line in out.splitlines()
            if re.match(r"^iq1_\w+\s+q8_", line)}
    assert len(rows) == 16
    # weights, activations, error vs w, error vs dequantized W, NaN count, overflow detected, time
    assert rows[("iq1_s_r4", "q8_1")][2:6] == ["nan", "nan", "64", "yes"]  # all of output row 0
    for (w, a), cols in rows.items():
        assert cols[5] == ("yes" if a == "q8_1" else "no")
        if (w, a) != ("iq1_s_r4", "q8_1"):
            assert cols[4] == "0" and float(cols[2]) < 0.7 and float(cols[3]) < 0.02
    assert re.search(r"^iq1_m_r4\s+1\.8125\s", out, re.M)  # 1.75 + 16 / 256 bits per weight


def test_bad_arguments_exit_nonzero(capsys):
    assert main(["demo", "--rows", "6", "--cols", "256"]) == 2  # 6 rows: not whole _r4 groups
    assert "multiple of 4 rows" in capsys.readouterr().err


def test_python_dash_m(python_subprocess):
    out = subprocess.run([python_subprocess, "-m", "iq1q", "info"], capture_output=True, text=True)
    assert out.returncode == 0 and "Kernel table" in out.stdout
