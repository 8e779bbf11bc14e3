"""The core's import graph, function-level imports included: no cycle at all.

The last one (``distributed -> evaluate -> personalize -> train -> distributed``) went when
checkpoint reading moved out of the trainer into :mod:`piebench.checkpoints`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "piebench"
KNOWN: list[set[str]] = []  # personalize reads checkpoints through piebench.checkpoints, not the trainer


def _modules(root: Path = ROOT) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = path.with_suffix("").relative_to(root.parent).parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its body (relative or absolute)."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                # ``from . import jsonio`` depends on the submodule, ``from . import hookimpl`` on the package
                names = [f"{target}.{alias.name}" if f"{target}.{alias.name}" in graph else target
                         for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            graph[mod].update(n for n in names if n in graph and n != mod)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(comp)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    for name in ("__init__.py", "sub/__init__.py", "a.py", "sub/c.py"):
        (pkg / name).write_text("")
    (pkg / "b.py").write_text("from . import a\n\n\ndef f():\n    from .sub import c\n    import pkg.a\n")
    assert import_graph(pkg)["pkg.b"] == {"pkg.a", "pkg.sub.c"}
    graph = import_graph()
    assert "piebench.plugins" in graph["piebench.config"]
    assert "piebench.colour" in graph["piebench.metrics.fidelity"]


def test_no_import_cycle_but_the_known_one():
    assert cycles(import_graph()) == KNOWN


def test_a_cycle_is_found():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
