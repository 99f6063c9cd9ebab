"""Installed plugins end to end: the example iq1q-numpy, and broken distributions.

Plugins load when iq1q is imported, so every case runs in a fresh interpreter.
"""

import importlib.metadata
import json
import os
import re
import subprocess

import pytest

try:
    NUMPY_PLUGIN = importlib.metadata.version("iq1q-numpy")
except importlib.metadata.PackageNotFoundError:
    NUMPY_PLUGIN = None
needs_numpy_plugin = pytest.mark.skipif(
    NUMPY_PLUGIN is None, reason="iq1q-numpy is not installed (pip install ./plugins/iq1q-numpy)")

NUMPY_PAIRS = [[w, a] for w in ("iq1_s", "iq1_m", "iq1_s_r4", "iq1_m_r4") for a in ("q8_0", "q8_k128")]

REPORT = """
import json, numpy as np, iq1q
rng = np.random.default_rng(0)
err = {}
for w, a in %r:
    W = iq1q.quantize(rng.standard_normal((8, 512)).astype(np.float32), w)
    x = rng.standard_normal((3, 512)).astype(np.float32)
    ref = iq1q.matmul(x, W, activation=a, backend="ref")
    err[w + "," + a] = float(abs(iq1q.matmul(x, W, activation=a) - ref).max() / abs(ref).max())
print(json.dumps({"origins": {b.name: b.origin for b in iq1q.backends()},
                  "table": {w + "," + a: b for (w, a), b in iq1q.kernel_table().items()},
                  "err": err, "broken": [[b.name, b.origin, b.error] for b in iq1q.plugins.broken()]}))
""" % NUMPY_PAIRS


def run(python, code, path=None, **env):
    """(stdout, stderr) of `python -c code` with IQ1Q_* variables from `env` only."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("IQ1Q_")}
    if path:
        base["PYTHONPATH"] = os.pathsep.join([str(path), base.get("PYTHONPATH", "")])
    out = subprocess.run([python, "-c", code], env={**base, **env}, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout, out.stderr


def report(python, path=None, **env):
    out, err = run(python, REPORT, path, **env)
    return json.loads(out), err


def fake_distribution(root, name, module_source):
    """A distribution `name` 1.0 on path `root`, whose entry point in group iq1q is module name_plugin."""
    module = name.replace("-", "_") + "_plugin"
    (root / f"{module}.py").write_text(module_source)
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[iq1q]\n{name} = {module}\n")
    return root


@needs_numpy_plugin
def test_listed_with_its_distribution_and_not_in_use_by_default(python_subprocess):
    got, _ = report(python_subprocess)
    assert got["origins"]["numpy"] == f"iq1q-numpy {NUMPY_PLUGIN}"
    if got["table"]["iq1_s,q8_0"] in ("avx2", "avx512"):  # priority 10 yields to SIMD
        assert "numpy" not in got["table"].values()


@needs_numpy_plugin
def test_backend_env_routes_its_pairs_and_falls_back_for_the_rest(python_subprocess):
    got, _ = report(python_subprocess, IQ1Q_BACKEND="numpy")
    mine = {k for k, b in got["table"].items() if b == "numpy"}
    assert mine == {",".join(p) for p in NUMPY_PAIRS}
    assert all(b != "numpy" for k, b in got["table"].items() if k not in mine) and len(got["table"]) == 16
    assert max(got["err"].values()) < 1e-5


@needs_numpy_plugin
def test_load_plugins_env_hides_or_selects(python_subprocess, tmp_path):
    other = fake_distribution(tmp_path, "toyplug", "import iq1q\n@iq1q.hookimpl\n"
                              "def iq1q_register_backends(register):\n"
                              "    register(iq1q.Backend('toy', priority=-1))\n")
    assert {"numpy", "toy"} <= set(report(python_subprocess, other)[0]["origins"])
    assert not {"numpy", "toy"} & set(report(python_subprocess, other, IQ1Q_LOAD_PLUGINS="")[0]["origins"])
    only = report(python_subprocess, other, IQ1Q_LOAD_PLUGINS="iq1q-numpy")[0]["origins"]
    assert "numpy" in only and "toy" not in only


@needs_numpy_plugin
def test_info_lists_it(python_subprocess):
    out, _ = run(python_subprocess, "from iq1q.cli import main; main(['info'])")
    # name, priority, available, pairs, origin (column widths follow the longest name)
    assert re.search(rf"^numpy +10 +yes +8 +iq1q-numpy {re.escape(NUMPY_PLUGIN)} ", out, re.M), out
    hidden, _ = run(python_subprocess, "from iq1q.cli import main; main(['info'])", IQ1Q_LOAD_PLUGINS="")
    assert "iq1q-numpy" not in hidden


BROKEN = {
    "import": ("import not_a_module_anywhere\n", "import failed: ModuleNotFoundError: No module named "
                                                 "'not_a_module_anywhere'"),
    "hook": ("import iq1q\n@iq1q.hookimpl\ndef iq1q_register_backends(register):\n"
             "    register(iq1q.Backend('half', priority=-1))\n    raise RuntimeError('no CPU for me')\n",
             "its iq1q_register_backends hook raised: RuntimeError: no CPU for me"),
    "misspelled": ("import iq1q\n@iq1q.hookimpl\ndef iq1q_register_backend(register):\n    pass\n",
                   "not a valid iq1q plugin: PluginValidationError: unknown hook 'iq1q_register_backend'"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_broken_plugin_is_reported_and_skipped(python_subprocess, tmp_path, kind):
    source, error = BROKEN[kind]
    path = fake_distribution(tmp_path, "badplug", source)
    got, stderr = report(python_subprocess, path, IQ1Q_LOAD_PLUGINS="badplug")
    assert "iq1q: skipping plugin 'badplug' of distribution badplug 1.0: " + error in stderr
    assert [b[:2] for b in got["broken"]] == [["badplug", "badplug 1.0"]] and error in got["broken"][0][2]
    assert "half" not in got["origins"] and got["origins"]["ref"] == "builtin"
    info, _ = run(python_subprocess, "from iq1q.cli import main; main(['info'])", path,
                  IQ1Q_LOAD_PLUGINS="badplug")
    assert "Broken plugins (skipped)" in info and "badplug 1.0" in info
