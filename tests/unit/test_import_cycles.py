"""No import cycles between mantis_stream modules, and training kept apart from inference.

Why: a cycle hidden by a function-local import (``models.rul`` <-> ``evaluation.rul``
was one) leaves both sides half-loaded depending on who imports first, and it
forces untyped signatures. The graph is read from the source with ``ast``, so
imports inside functions and under ``TYPE_CHECKING`` count too: moving an import
into a function does not hide a cycle from this test.

An import of ``a.b.c`` is an edge to ``a.b.c`` only; a package's ``__init__``
runs before its submodules whoever imports them, and one that imports its own
submodules (``agents``, ``commands`` register theirs) is not a cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

import mantis_stream

ROOT = Path(mantis_stream.__file__).resolve().parent
PACKAGE = "mantis_stream"


def _modules(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package's __init__)."""
    out = {}
    for path in root.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        out[".".join(parts)] = (path, is_pkg)
    return out


def _imports(name: str, tree: ast.AST, is_pkg: bool, known: set[str]) -> set[str]:
    """The mantis_stream modules ``name`` imports anywhere in its source."""
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for a in node.names:  # ``from pkg import sub`` imports the submodule
                found.add(f"{module}.{a.name}" if f"{module}.{a.name}" in known else module)
    edges = set()
    for target in found:
        parts = target.split(".")
        while parts and ".".join(parts) not in known:  # ``import a.b.attr`` -> a.b
            parts.pop()
        dotted = ".".join(parts)
        if dotted.startswith(PACKAGE) and dotted != name:
            edges.add(dotted)
    return edges


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the mantis_stream modules it imports (module level or not)."""
    mods = _modules(root)
    known = set(mods)
    return {name: _imports(name, ast.parse(path.read_text(), str(path)), is_pkg, known) for name, (path, is_pkg) in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules, the first repeated at the end), or None."""
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "mantis_stream.training.rul" in graph and "mantis_stream.models.rul" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_walk_sees_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE
    (pkg / "models").mkdir(parents=True)
    (pkg / "evaluation").mkdir()
    for init in (pkg, pkg / "models", pkg / "evaluation"):
        (init / "__init__.py").write_text("")
    (pkg / "models" / "rul.py").write_text("def best():\n    from ..evaluation.rul import score\n    return score\n")
    (pkg / "evaluation" / "rul.py").write_text("from ..models import rul\n\ndef score():\n    return rul\n")
    cycle = find_cycle(import_graph(pkg))
    assert cycle is not None and set(cycle) == {f"{PACKAGE}.models.rul", f"{PACKAGE}.evaluation.rul"}


@pytest.mark.parametrize("module", ["mantis_stream.models.rul", "mantis_stream.models.health", "mantis_stream.agents.rul"])
def test_inference_does_not_import_training_or_evaluation(module: str) -> None:
    graph = import_graph()
    reached, todo = set(), [module]
    while todo:
        m = todo.pop()
        for t in graph.get(m, ()):
            if t not in reached:
                reached.add(t)
                todo.append(t)
    offline = sorted(m for m in reached if m.startswith((f"{PACKAGE}.training", f"{PACKAGE}.evaluation")))
    assert offline == [], f"{module} pulls in offline code: {offline}"
