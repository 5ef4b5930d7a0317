"""No import circle: taalm's modules import each other along an acyclic graph, read from the source with ``ast``.

A circle works only while one of its imports sits inside a function (or the modules happen to be imported in one
order); ``taalm.bench`` had one (config -> twiki_data -> lama_ckl -> config).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files() -> dict[str, Path]:
    files = {}
    for path in sorted((SRC / "taalm").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imports(path: Path, modules: set[str], everywhere: bool) -> set[str]:
    """The taalm modules ``path`` imports: at module level, or (``everywhere``) inside functions too. ``from a import
    b`` counts as importing ``a.b`` when that is a module, else ``a``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = ast.walk(tree) if everywhere else iter(tree.body)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                      for a in node.names}
    return found - {"taalm"}  # the package's __init__ holds only the version


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` (module -> modules it imports), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finds_a_circle_and_only_a_circle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_module_files_are_found():
    files = module_files()
    assert {"taalm.cli", "taalm.bench.runner", "taalm.bench.lama_data", "taalm.bench"} <= set(files)
    graph = {m: imports(p, set(files), everywhere=True) for m, p in files.items()}
    assert "taalm.bench.lama_data" in graph["taalm.bench.twiki_data"]  # LAMA-ckl's rows, not lama_ckl's benchmark


@pytest.mark.parametrize("everywhere", [False, True], ids=["module level", "function level too"])
def test_taalm_bench_imports_no_circle(everywhere):
    files = module_files()
    graph = {m: imports(p, set(files), everywhere) for m, p in files.items() if m.startswith("taalm.bench")}
    assert cycle(graph) is None


def test_taalm_imports_no_circle_at_module_level():
    files = module_files()
    assert cycle({m: imports(p, set(files), everywhere=False) for m, p in files.items()}) is None
