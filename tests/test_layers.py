"""The package's import graph, read from the source with ast: no circles, and two layers.

Layer 1 is the kernel library (iq1q and its modules outside iq1q.models), layer 2 the model
tooling (iq1q.models). Layer 2 imports layer 1, never the other way round. Above both stand
the command line (iq1q.cli, iq1q.__main__) and the public alias iq1q.gguf_io. Imports inside
functions count as much as those at the top of a module.
"""

import ast
from pathlib import Path

import pytest

import iq1q

PACKAGE = Path(iq1q.__file__).resolve().parent
TOP = {"iq1q.cli", "iq1q.__main__", "iq1q.gguf_io"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The iq1q modules that the file at path imports, wherever the import statement stands."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import mod` imports the module pkg.mod where there is one
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    # compiled modules (iq1q._ref, ...) are modules too: `from . import _ref` is no import of iq1q
    native = {module_name(p.with_name(p.name.partition(".")[0] + ".py"))
              for p in PACKAGE.rglob("*") if p.suffix in (".so", ".pyd")}
    return {name: imports(path, set(files) | native) - native for name, path in files.items()}


def test_the_graph_is_read():
    g = graph()
    # known edges, so that a reader that finds nothing cannot pass the tests below
    assert "iq1q.registry" in g["iq1q.gemm"]
    assert "iq1q.models.chunks" in g["iq1q.models.imatrix"]  # an import inside a function
    assert "iq1q.formats" in g["iq1q.models.perplexity"]  # a relative import two levels up


def test_no_circle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(g[m]):
            if state.get(n) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(n):] + [n]))
            if n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


def test_the_kernel_library_never_imports_the_model_tooling():
    for m, targets in graph().items():
        if m in TOP or m.startswith("iq1q.models"):
            continue
        above = sorted(t for t in targets if t in TOP or t.startswith("iq1q.models"))
        assert not above, f"{m} (layer 1) imports {above}"
