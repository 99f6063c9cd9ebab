"""Backends, plugins, fallback and the environment variables."""

import json
import subprocess

import numpy as np
import pytest

import iq1q
from conftest import sanitizer_env
from iq1q import plugins, registry


class Recorder:
    """A throw-away plugin that serves some pairs by calling the ref kernels, recording each call."""

    def __init__(self, name, pairs, priority=0, available=True):
        self.name, self.pairs, self.priority, self.available = name, pairs, priority, available
        self.calls = []

    def _kernel(self, pair):
        def kernel(w, a, y, K, threads):
            self.calls.append((pair, threads))
            registry.kernel(*pair, backend="ref")[1](w, a, y, K, threads)
        return kernel

    @iq1q.hookimpl
    def iq1q_register_backends(self, register):
        register(iq1q.Backend(self.name, kernels={p: self._kernel(p) for p in self.pairs},
                              priority=self.priority, is_available=lambda: self.available))


@pytest.fixture
def register_plugin():
    added = []

    def add(plugin):
        plugins.pm.register(plugin, name=f"test-{plugin.name}")
        added.append(plugin)
        return plugin

    yield add
    for p in added:
        plugins.pm.unregister(p)


@pytest.fixture
def weights(rng):
    return iq1q.quantize(rng.standard_normal((8, 256)).astype(np.float32), "iq1_s_r4")


def test_ref_backend_is_builtin_and_serves_every_pair():
    ref = next(b for b in iq1q.backends() if b.name == "ref")
    assert (ref.origin, ref.available, ref.priority) == ("builtin", True, 0)
    assert len(ref.pairs) == 16
    assert set(iq1q.kernel_table()) == {(w, a) for w in iq1q.WEIGHT_FORMATS for a in iq1q.ACTIVATION_FORMATS}
    assert "iq1q.builtin_backends.ref" in plugins.DEFAULT_PLUGINS


def test_auto_picks_highest_priority_available():
    best = max((b for b in iq1q.backends() if b.available), key=lambda b: b.priority)
    assert iq1q.get_backend() == best.name


def test_throwaway_plugin_selected_by_env(register_plugin, monkeypatch, weights, rng):
    pair = ("iq1_s_r4", "q8_k128")
    toy = register_plugin(Recorder("toy", [pair], priority=-5))
    info = next(b for b in iq1q.backends() if b.name == "toy")
    assert (info.origin, info.pairs) == ("runtime", (pair,))
    monkeypatch.setenv("IQ1Q_BACKEND", "toy")
    assert iq1q.get_backend() == "toy"
    table = iq1q.kernel_table()
    assert table[pair] == "toy"
    assert table[("iq1_s_r4", "q8_0")] != "toy"  # falls back, pair by pair
    x = rng.standard_normal((3, 256)).astype(np.float32)
    y = iq1q.matmul(x, weights)
    assert toy.calls and toy.calls[0][0] == pair
    np.testing.assert_array_equal(y, iq1q.matmul(x, weights, backend="ref"))
    iq1q.matmul(x, weights, activation="q8_0")
    assert all(c[0] == pair for c in toy.calls)


def test_unregistered_plugin_is_gone(register_plugin, monkeypatch):
    toy = register_plugin(Recorder("gone", [("iq1_s", "q8_k")]))
    assert "gone" in [b.name for b in iq1q.backends()]
    plugins.pm.unregister(toy)
    monkeypatch.setenv("IQ1Q_BACKEND", "gone")
    with pytest.raises(ValueError, match="unknown backend 'gone'; choose auto or one of: .*ref"):
        iq1q.get_backend()
    plugins.pm.register(toy, name="test-gone")  # so the fixture can unregister it


def test_priority_fallback_per_pair(register_plugin):
    p1, p2 = ("iq1_m", "q8_k"), ("iq1_m", "q8_0")
    register_plugin(Recorder("high", [p1], priority=1000))
    register_plugin(Recorder("mid", [p1, p2], priority=999))
    table = iq1q.kernel_table()
    assert (table[p1], table[p2]) == ("high", "mid")
    assert iq1q.kernel_table("mid")[p1] == "mid"


def test_unavailable_backend(register_plugin, monkeypatch):
    register_plugin(Recorder("nocpu", [("iq1_s", "q8_k")], priority=5000, available=False))
    assert iq1q.get_backend() != "nocpu"
    assert iq1q.kernel_table()[("iq1_s", "q8_k")] != "nocpu"
    monkeypatch.setenv("IQ1Q_BACKEND", "nocpu")
    with pytest.raises(ValueError, match="'nocpu' is not available on this machine; available: auto, .*ref"):
        iq1q.kernel_table()


def test_unknown_backend_argument_and_env(monkeypatch, weights):
    with pytest.raises(ValueError, match="unknown backend 'fast'; choose auto or one of: .*ref"):
        iq1q.matmul(np.zeros(256, np.float32), weights, backend="fast")
    monkeypatch.setenv("IQ1Q_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        iq1q.matmul(np.zeros(256, np.float32), weights)
    monkeypatch.setenv("IQ1Q_BACKEND", "auto")
    assert iq1q.get_backend()


def test_duplicate_backend_name(register_plugin):
    register_plugin(Recorder("ref", [("iq1_s", "q8_k")]))
    with pytest.raises(ValueError, match="backend 'ref' is registered twice"):
        iq1q.backends()


def test_backend_checks_its_formats():
    with pytest.raises(ValueError, match="unknown format 'q4_k'"):
        iq1q.Backend("bad", kernels={("iq1_s", "q4_k"): print})
    with pytest.raises(ValueError, match="name other than 'auto'"):
        iq1q.Backend("auto")


@pytest.mark.parametrize("value,message", [("0", "positive"), ("two", "not a whole number"), ("-3", "positive")])
def test_bad_thread_env(monkeypatch, weights, value, message):
    monkeypatch.setenv("IQ1Q_NUM_THREADS", value)
    with pytest.raises(ValueError, match=message):
        iq1q.matmul(np.ones(256, np.float32), weights)


def test_bad_threads_argument(weights):
    with pytest.raises(ValueError, match="threads must be a positive whole number"):
        iq1q.matmul(np.ones(256, np.float32), weights, threads=0)


ENTRY_POINT_PLUGIN = '''
import iq1q

@iq1q.hookimpl
def iq1q_register_backends(register):
    register(iq1q.Backend("epbackend", priority=-1))
'''


@pytest.fixture
def installed_plugin(tmp_path):
    """A distribution 'toyplug' on a path, declaring an entry point in group iq1q."""
    (tmp_path / "toyplug_backend.py").write_text(ENTRY_POINT_PLUGIN)
    info = tmp_path / "toyplug-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplug\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[iq1q]\ntoyplug = toyplug_backend\n")
    return tmp_path


def _backends_in_subprocess(python, path, load_plugins):
    # a bare environment, but for the sanitizer runtimes (tools/test-sanitizers.sh)
    env = {"PYTHONPATH": str(path), "PATH": "", **sanitizer_env()}
    if load_plugins is not None:
        env["IQ1Q_LOAD_PLUGINS"] = load_plugins
    code = "import iq1q, json; print(json.dumps({b.name: b.origin for b in iq1q.backends()}))"
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True)
    return out.returncode, out.stdout, out.stderr


@pytest.mark.parametrize("load,loaded", [(None, True), ("toyplug", True), ("", False), ("other,toyplug", None)])
def test_entry_point_plugins_and_load_plugins_env(python_subprocess, installed_plugin, load, loaded):
    code, out, err = _backends_in_subprocess(python_subprocess, installed_plugin, load)
    if loaded is None:
        assert code == 0 and "IQ1Q_LOAD_PLUGINS names 'other', which is not installed" in err
        loaded = True
    assert code == 0, err
    origins = json.loads(out)
    assert origins["ref"] == "builtin"
    assert ("epbackend" in origins) == loaded
    if loaded:
        assert origins["epbackend"] == "toyplug 1.2"
