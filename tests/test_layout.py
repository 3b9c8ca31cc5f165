"""The package's layout stays readable: one job per file, no file over 300 lines, no circle.

Read from the source with ``ast``: every import of a ``numgrad`` module counts, also one
made inside a function (a lazy import still ties the two files together).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "numgrad"
MAX_LINES = 300


def modules() -> dict[str, Path]:
    """``numgrad.tracking.sink`` -> its file, for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports (``from numgrad.x import y`` counts
    ``numgrad.x.y`` when that is a module, else ``numgrad.x``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x
                base = ".".join([package.rsplit(".", node.level - 1)[0], base]).strip(".")
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    # Importing numgrad.a.b also runs numgrad.a and numgrad: not a dependency of interest.
    return {t for t in out if not name.startswith(t + ".")}


def test_no_module_is_over_300_lines_and_each_says_its_job_first():
    too_long, silent = [], []
    for name, path in modules().items():
        if len(path.read_text().splitlines()) > MAX_LINES:
            too_long.append(name)
        if not ast.get_docstring(ast.parse(path.read_text())):
            silent.append(name)
    assert not too_long, f"over {MAX_LINES} lines: {too_long}"
    assert not silent, f"no docstring saying what the module is for: {silent}"


def test_no_module_imports_one_that_imports_it_back():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    assert graph["numgrad.cli"] >= {"numgrad.signals"}  # the reader reads real imports
    # Depth-first search for a cycle; report the first one found, as a path.
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
            if state.get(nxt) is None and (cycle := visit(nxt, [*path, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if state.get(start) is None and (cycle := visit(start, [start])):
            raise AssertionError("import circle: " + " -> ".join(cycle))


def test_the_numeric_core_imports_neither_hydra_nor_mlflow():
    core = ("functions", "gradient", "vectorized", "precision", "inputs", "net", "descent",
            "columns", "vectorized_forward", "vectorized_complex", "schemes")  # fmt: skip
    for name in core:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            bad = [n for n in names if n.split(".")[0] in ("hydra", "omegaconf", "mlflow")]
            assert not bad, f"numgrad.{name} imports {bad}"
