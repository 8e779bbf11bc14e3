"""The core's shape: short functions, and imports at the top of each module.

A function-level import is allowed only for a heavy or optional third-party package (the list
below, each with its reason); never for a piebench module, whose imports belong at the top
where the import graph and the layer test (docs/architecture.md) can see them.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "piebench"
MAX_LINES = 80

#: Imported where used: a measurable cost at every command's start, or not always installed.
#: (Measured after torch, with ``python -X importtime``.)
LAZY_THIRD_PARTY = {
    "scipy": "scipy.stats / scipy.interpolate take 0.3-0.8 s; statistics and retouch curves only",
    "sklearn": "1.4 s; the separability probes and pie-synth's sample images only",
    "matplotlib": "0.3 s; figures only",
    "lpips": "2.6 s (loads torchvision's models); the LPIPS metric only",
    "piq": "2.3 s; SSIM only",
    "submitit": "Slurm launches only",
    "rawpy": "optional (piebench[raw]); DNG files only",
    "threadpoolctl": "comes with scikit-learn, not a direct dependency; used only around its calls",
    "torch.utils.flop_counter": "0.2 s; only `piebench bench` counts FLOPs",
    "torch.distributed.nn": "absent from some torch builds (no distributed support); only multi-process runs",
    "jinja2": "20-40 ms; only `piebench report` renders HTML",
}

def _files() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def long_functions(tree: ast.AST, where: str) -> list[str]:
    """``file:line name (N lines)`` for every function or method over :data:`MAX_LINES` lines."""
    return [f"{where}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_LINES]


def _lazy_allowed(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in LAZY_THIRD_PARTY)


def function_level_imports(tree: ast.AST, where: str) -> list[str]:
    """``file:line module`` for every import inside a function that is not an allowed lazy one."""
    out = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(fn):
            if isinstance(node, ast.ImportFrom):
                modules = ["." * node.level + (node.module or "")]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            else:
                continue
            out += [f"{where}:{node.lineno} {m}" for m in modules if m.startswith(".") or not _lazy_allowed(m)]
    return sorted(set(out))


def test_no_function_is_longer_than_80_lines():
    found = [hit for p in _files() for hit in long_functions(ast.parse(p.read_text()), str(p.relative_to(ROOT)))]
    assert not found, f"split these into steps that read top to bottom: {found}"


def test_imports_at_module_top_unless_heavy_or_optional():
    found = [hit for p in _files()
             for hit in function_level_imports(ast.parse(p.read_text()), str(p.relative_to(ROOT)))]
    assert not found, (f"move these imports to the top of their module (or, for a heavy optional package, "
                       f"add it to LAZY_THIRD_PARTY with the reason): {found}")


def test_the_checks_find_what_they_look_for():
    body = "\n".join(f"    x = {i}" for i in range(MAX_LINES))
    src = (f"def long():\n{body}\n\n\ndef short():\n    return 1\n\n\n"
           "class C:\n    def m(self):\n        from . import errors\n        import json\n"
           "        from scipy import stats\n        import sklearn.cluster\n        from piebench import x\n")
    tree = ast.parse(src)
    assert long_functions(tree, "f.py") == [f"f.py:1 long ({MAX_LINES + 1} lines)"]
    m = MAX_LINES + 9  # the line of ``def m``
    assert function_level_imports(tree, "f.py") == [f"f.py:{m + 1} .", f"f.py:{m + 2} json", f"f.py:{m + 5} piebench"]

