"""The core's layers (docs/architecture.md): no module imports a module of a higher layer.

The layer table is read from the document itself, so the document and the test cannot drift
apart; the import graph (function-level imports included) comes from test_import_graph.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_import_graph import import_graph

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*([\w-]+)\s*\|(.*)\|\s*$")


def read_layers(text: str) -> dict[str, tuple[int, str]]:
    """Module pattern (``data.*``, ``config``, ``piebench``) -> (layer number, layer name)."""
    out: dict[str, tuple[int, str]] = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            for name in re.findall(r"`([^`]+)`", m.group(3)):
                assert name not in out, f"{name} is listed in two layers of docs/architecture.md"
                out[name] = (int(m.group(1)), m.group(2))
    return out


def layer_of(module: str, layers: dict[str, tuple[int, str]]) -> tuple[int, str] | None:
    """The layer of ``piebench.X.Y``: an exact entry ``X.Y`` first, else the nearest ``X.*``."""
    rel = "piebench" if module == "piebench" else module.removeprefix("piebench.")
    if rel in layers:
        return layers[rel]
    parts = rel.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if ".".join(parts[:i]) + ".*" in layers:
            return layers[".".join(parts[:i]) + ".*"]
    return None


def upward_imports(graph: dict[str, set[str]], layers: dict[str, tuple[int, str]]) -> list[str]:
    """``a (layer) -> b (higher layer)`` for every import that goes up."""
    out = []
    for mod, targets in sorted(graph.items()):
        low = layer_of(mod, layers)
        for target in sorted(targets):
            high = layer_of(target, layers)
            if low and high and high[0] > low[0]:
                out.append(f"{mod} ({low[1]}) -> {target} ({high[1]})")
    return out


@pytest.fixture(scope="module")
def layers() -> dict[str, tuple[int, str]]:
    return read_layers(DOC.read_text())


def test_every_module_has_a_layer(layers):
    missing = [m for m in sorted(import_graph()) if layer_of(m, layers) is None]
    assert not missing, f"add these modules to the layer table in docs/architecture.md: {missing}"


def test_the_table_names_only_modules_that_exist(layers):
    graph = import_graph()
    stale = [name for name in layers
             if not any(layer_of(m, {name: layers[name]}) for m in graph)]
    assert not stale, f"docs/architecture.md lists modules piebench no longer has: {stale}"


def test_no_module_imports_a_higher_layer(layers):
    assert upward_imports(import_graph(), layers) == []


def test_an_upward_import_is_found(layers):
    graph = {"piebench.data.images": {"piebench.config", "piebench.errors"}, "piebench.config": {"piebench.errors"},
             "piebench.errors": set()}
    assert upward_imports(graph, layers) == ["piebench.data.images (data) -> piebench.config (config)"]
    assert layer_of("piebench.data.images", layers)[1] == "data"
    assert layer_of("piebench", layers)[1] == "interface"
