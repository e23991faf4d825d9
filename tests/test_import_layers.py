"""The stages import downwards only: no import cycle through the lower layers, hidden or not.

An import inside a function still makes a cycle (it only postpones it to the first call), so
every ``import`` counts here, at module level or not; only ``if TYPE_CHECKING:`` blocks do not
(they never run). Importing ``a.b.c`` runs ``a`` and ``a.b`` too, so those count as imported.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "governed_db"

# Modules (and packages, with everything below them) that must be in no import cycle: the
# state leaf, analysis, the rule catalogue and decision, the audit trail's core.
LOWER = ("governed_db._state", "governed_db._toml_lines", "governed_db.analysis",
         "governed_db.rules", "governed_db.audit", "governed_db.errors")
# What the composition root (``_config``: configure(), a connection's defaults) may be imported
# by: the connection/cursor layer, the engine and the front ends, never a stage below them.
NOT_IMPORTING_CONFIG = ("governed_db._state", "governed_db.analysis", "governed_db.rules",
                        "governed_db.audit", "governed_db.approvals", "governed_db.policy",
                        "governed_db.masking")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        mod = _module_name(path)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hidden = {id(n) for node in ast.walk(tree)
                  if isinstance(node, ast.If) and isinstance(node.test, ast.Name)
                  and node.test.id == "TYPE_CHECKING" for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" for a in node.names] + [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for target in targets:
                parts = target.split(".")
                if parts[0] != "governed_db":
                    continue
                for k in range(2, len(parts) + 1):
                    dep = ".".join(parts[:k])
                    if dep != mod and not mod.startswith(dep + "."):
                        edges[mod].add(dep)
    known = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    return {m: {d for d in deps if d in known} for m, deps in edges.items()}


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(comp)
    return out


def _under(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_lower_layers_are_in_no_import_cycle():
    bad = [sorted(c) for c in _cycles(_graph()) if any(_under(m, LOWER) for m in c)]
    assert not bad, f"import cycle through a lower layer: {bad}"


def test_stages_do_not_import_the_composition_root():
    graph = _graph()
    bad = sorted(m for m, deps in graph.items()
                 if _under(m, NOT_IMPORTING_CONFIG) and "governed_db._config" in deps)
    assert not bad, f"these import governed_db._config (use governed_db._state): {bad}"


def test_the_check_sees_a_hidden_cycle():
    # A function-level import back into a module that imports us is a cycle.
    edges = {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert _cycles(edges) == [{"a", "b"}]
    graph = _graph()
    assert "governed_db.rules" in graph["governed_db.policy"]  # the model validates by it
