"""CPU feature detection (kernels/cpu.h) and the IQ1Q_DISABLE_CPU_FEATURES mask (iq1q.cpu)."""

import platform
import sys
from pathlib import Path

import pytest

from iq1q import cpu
from iq1q.cli import main

# /proc/cpuinfo flag -> iq1q feature. The kernel drops a flag when the OS does not save its
# register state (XCR0), so these flags are the detection, OS verdict included.
CPUINFO_FLAGS = {
    "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c", "avx_vnni": "avxvnni",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl", "avx512dq": "avx512dq",
    "avx512_vnni": "avx512vnni", "avx512vbmi": "avx512vbmi",
}


@pytest.fixture(autouse=True)
def _no_mask(monkeypatch):
    monkeypatch.delenv(cpu.ENV_DISABLE, raising=False)


def _cpuinfo_flags() -> set[str]:
    cpuinfo = Path("/proc/cpuinfo")
    if not (sys.platform == "linux" and platform.machine() == "x86_64" and cpuinfo.exists()):
        pytest.skip("needs /proc/cpuinfo of Linux x86-64")
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    pytest.skip("/proc/cpuinfo has no flags line")


@pytest.mark.parametrize("flag", CPUINFO_FLAGS)
def test_detection_agrees_with_proc_cpuinfo(flag):
    assert cpu.detected()[CPUINFO_FLAGS[flag]] == (flag in _cpuinfo_flags())


def test_os_support_gates_the_avx_families():
    found, state = cpu.detected(), cpu.os_support()
    assert set(state) == ({"avx", "avx512"} if platform.machine() in ("x86_64", "AMD64") else set())
    if state:
        assert state["avx"] or not state["avx512"]  # AVX-512 state includes AVX state
        avx = ("avx", "avx2", "fma", "f16c", "avxvnni")
        assert state["avx"] or not any(found[f] for f in avx)
        assert state["avx512"] or not any(found[f] for f in found if f.startswith("avx512"))


def test_names_are_the_same_everywhere():
    assert set(cpu.known()) == set(cpu.detected()) == set(cpu.features())
    assert not {"x86_64", "aarch64", "os_avx", "os_avx512"} & set(cpu.known())
    assert {"avx2", "fma", "f16c", "avx512f", "avx512vnni", "neon", "dotprod", "i8mm"} <= set(cpu.known())


def test_unmasked_features_are_the_detected_ones():
    assert cpu.masked() == frozenset()
    assert cpu.features() == cpu.detected()
    for name, on in cpu.detected().items():
        assert cpu.has(name) == on
    assert cpu.has() is True


def test_mask_makes_features_absent(monkeypatch):
    found = cpu.detected()
    monkeypatch.setenv(cpu.ENV_DISABLE, " AVX2 ,fma,,Neon ")  # whitespace, case, empty items
    assert cpu.masked() == {"avx2", "fma", "neon"}
    usable = cpu.features()
    assert not usable["avx2"] and not usable["fma"] and not usable["neon"]
    assert not cpu.has("avx2") and not cpu.has("f16c", "fma")
    assert cpu.detected() == found  # detection ignores the mask
    assert usable == {f: on and f not in ("avx2", "fma", "neon") for f, on in found.items()}


def test_unknown_masked_names_warn_and_are_ignored(monkeypatch):
    monkeypatch.setenv(cpu.ENV_DISABLE, "avx512f,avx3000")
    with pytest.warns(UserWarning, match=r"avx3000.*known: .*avx512f"):
        assert cpu.masked() == {"avx512f"}
    with pytest.warns(UserWarning, match="avx3000"):
        assert not cpu.has("avx512f")


def test_has_rejects_unknown_names():
    with pytest.raises(ValueError, match="nonsense"):
        cpu.has("avx2", "nonsense")
    with pytest.raises(ValueError, match="AVX2"):  # has() takes the exact names
        cpu.has("AVX2")


def test_info_shows_features_and_mask(monkeypatch, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("CPU features:"))
    assert "masked" not in line
    assert set(line.split(":", 1)[1].split()) <= set(cpu.known()) | {"(none", "detected)"}
    if cpu.os_support():
        yes = {True: "yes", False: "no"}
        state = cpu.os_support()
        assert f"OS register state (XCR0): AVX {yes[state['avx']]}, AVX-512 {yes[state['avx512']]}" in out

    monkeypatch.setenv(cpu.ENV_DISABLE, "fma, avx512f")
    assert main(["info"]) == 0
    assert f"(masked by {cpu.ENV_DISABLE}: fma avx512f)" in capsys.readouterr().out
