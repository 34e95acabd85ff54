"""Imports run one way: ``handseg``'s subpackages from the bottom up, ``trainer`` and ``evaluator`` on top.

Every ``import`` of every module (also those under ``if TYPE_CHECKING:`` and inside functions) is read from the
source, so a lazy import that runs upwards fails here too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What each handseg subpackage may import besides itself (the table in handseg/__init__.py).
ALLOWED = {
    "runtime": set(),
    "format": {"runtime"},
    "data": {"runtime", "format"},
    "phantom": {"runtime", "format", "data"},
    "model": {"runtime", "format", "data"},
    "inference": {"runtime", "format", "data", "model"},
}
TOP = {"trainer": {"handseg"}, "evaluator": {"handseg"}}  # neither imports the other


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every absolute import in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            if node.module == "handseg":  # ``from handseg import format`` names subpackages
                found += [(node.lineno, f"handseg.{alias.name}") for alias in node.names]
    return found


def upward_imports(package_root: Path) -> list[str]:
    """Every import in ``handseg/``, ``trainer/`` and ``evaluator/`` that its layer does not allow."""
    problems = []
    for path in sorted(package_root.rglob("*.py")):
        rel = path.relative_to(package_root.parent)
        top = rel.parts[0]
        own = rel.parts[1] if top == "handseg" and len(rel.parts) > 2 else None
        for line, module in imported_modules(path):
            parts = module.split(".")
            if parts[0] in TOP and parts[0] != top and (top == "handseg" or parts[0] not in TOP[top]):
                problems.append(f"{rel}:{line} imports {module}")
            elif top == "handseg" and parts[0] == "handseg" and len(parts) > 1 and parts[1] in ALLOWED:
                if own is None or (parts[1] != own and parts[1] not in ALLOWED[own]):
                    problems.append(f"{rel}:{line} imports {module}")
    return problems


@pytest.mark.parametrize("package", ["handseg", "trainer", "evaluator"])
def test_no_import_runs_upwards(package):
    assert upward_imports(REPO / package) == []


def test_every_handseg_module_sits_in_a_subpackage():
    loose = [p.name for p in (REPO / "handseg").glob("*.py") if p.name != "__init__.py"]
    assert loose == []
    assert {p.name for p in (REPO / "handseg").iterdir() if (p / "__init__.py").is_file()} == set(ALLOWED)


def test_the_check_catches_an_upward_import(tmp_path):
    """The rules bite: a format module importing the model, and handseg importing the trainer, are reported."""
    pkg = tmp_path / "handseg"
    for sub in ALLOWED:
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "format" / "bad.py").write_text("from handseg.model.factory import build_model\n")
    (pkg / "data" / "lazy.py").write_text("def f():\n    import trainer.train\n")
    (pkg / "model" / "ok.py").write_text("from handseg.data.image_io import read_image\n")
    assert upward_imports(pkg) == ["handseg/data/lazy.py:2 imports trainer.train",
                                   "handseg/format/bad.py:1 imports handseg.model.factory"]


def module_graph(roots: list[Path]) -> dict[str, set[str]]:
    """Project module -> the project modules it imports (anywhere in its source), by dotted name."""
    modules = {}
    for root in roots:
        for path in root.rglob("*.py"):
            rel = path.relative_to(root.parent).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            modules[name] = path
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, module in imported_modules(path):
            while module and module not in modules:  # ``from a.b import c``: a.b, or the package a
                module = module.rpartition(".")[0]
            if module and module != name and not name.startswith(module + "."):  # a package's own __init__
                targets.add(module)
        graph[name] = targets
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected set of two or more modules (Tarjan), each sorted."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                cycles.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_no_import_circle():
    assert import_cycles(module_graph([REPO / "handseg", REPO / "trainer", REPO / "evaluator"])) == []


def test_the_cycle_check_finds_a_circle():
    graph = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "a.w": {"a.x"}}
    assert import_cycles(graph) == [["a.x", "a.y", "a.z"]]
