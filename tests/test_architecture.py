"""The import graph keeps its layers (docs/ARCHITECTURE.md): no cycle, no import up a layer, none hidden in a function.

`.importlinter` lists core's layers top to bottom; import-linter (grimp underneath, which reads
every import statement, those inside functions included) fails on any import from a lower layer
into a higher one or between independent siblings, and on any core module the contract leaves out.
The cycle check below reads the same graph and names the cycle. The ast test forbids the trick
that used to hide cycles: `import core...` inside a function body.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = [ROOT / "Home.py", ROOT / "scheduled_tasks.py", *sorted((ROOT / "pages").glob("*.py"))]


def test_core_keeps_its_layers():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint), "--config", str(ROOT / ".importlinter"), "--no-cache"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"import contract broken (see docs/ARCHITECTURE.md):\n{result.stdout}\n{result.stderr}"


def _cycle(graph: grimp.ImportGraph, modules: set[str]) -> list[str] | None:
    """One import cycle among `modules` (depth-first search), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module) & modules):
            if state.get(imported) == 1:
                return path[path.index(imported):] + [imported]
            if imported not in state and (found := visit(imported)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(modules):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_core_has_no_import_cycle():
    sys.path.insert(0, str(ROOT))
    graph = grimp.build_graph("core", cache_dir=None)
    cycle = _cycle(graph, set(graph.modules))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _imports_in_functions(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            for inner in ast.walk(node):
                names = ([a.name for a in inner.names] if isinstance(inner, ast.Import)
                         else [inner.module or ""] if isinstance(inner, ast.ImportFrom) and inner.level == 0 else [])
                for name in names:
                    if name == "core" or name.startswith("core."):
                        found.append(f"{path.relative_to(ROOT)}:{inner.lineno} imports {name} inside {getattr(node, 'name', 'lambda')}()")
    return found


def test_no_core_import_inside_a_function():
    files = [*sorted((ROOT / "core").glob("*.py")), *ENTRY_POINTS]
    found = sorted({line for path in files for line in _imports_in_functions(path)})
    assert not found, ("imports of core inside functions hide the real dependency; import at the top, move the shared "
                       "piece down or pass it in as an argument:\n" + "\n".join(found))
