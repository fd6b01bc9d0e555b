"""The code's shape: modules import each other without cycles (deferred imports included: none may hide one), and
the paper model is defined in one place."""

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag", "app")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, ast.Module]:
    return {
        module_name(path): ast.parse(path.read_text(encoding="utf-8"))
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def imported(tree: ast.Module, known: set[str]) -> set[str]:
    """The project modules a module imports anywhere in it (at the top, in a function, under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    trees = modules()
    graph = nx.DiGraph()
    for name, tree in trees.items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in imported(tree, set(trees)) if target != name)
    # a package's __init__ re-exporting its own modules is not a cycle between concerns
    own = [(a, b) for a, b in graph.edges if b.startswith(a + ".") or a.startswith(b + ".")]
    graph.remove_edges_from(own)
    assert list(nx.simple_cycles(graph)) == []


def test_paper_and_passage_are_defined_once() -> None:
    defined = [
        (name, node.name)
        for name, tree in modules().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.ClassDef) and node.name in {"Paper", "Passage", "Hit", "Source", "Reference"}
    ]
    assert sorted(defined) == [("rag.papers", "Hit"), ("rag.papers", "Paper"), ("rag.papers", "Passage"),
                               ("rag.papers", "Source")]  # fmt: skip
