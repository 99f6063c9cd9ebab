"""docs/plugins.md: its python blocks run, in order, in one namespace, so they cannot rot."""

import re
import sys
import types

from conftest import ROOT

from iq1q import plugins

DOC = ROOT / "docs" / "plugins.md"


def test_plugin_guide_code_runs():
    blocks = re.findall(r"^```python\n(.*?)^```", DOC.read_text(), re.M | re.S)
    assert len(blocks) == 3
    # a module of its own, as a plugin is, so that it can register itself
    module = types.ModuleType("iq1q_doc_example")
    sys.modules[module.__name__] = module
    try:
        for block in blocks:
            exec(compile(block, str(DOC), "exec"), module.__dict__)
    finally:
        del sys.modules[module.__name__]
        if plugins.pm.has_plugin("doc-example"):  # a block failed before the unregistering one
            plugins.pm.unregister(name="doc-example")
