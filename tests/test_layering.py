"""The house's rules, checked: `eul` imports neither Prefect nor MLflow, nothing under `eul/`
imports `flows`, `tasks` or `benchmarks`, no package imports one of a higher role, and no
two modules import each other (directly or round a circle)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "eul"
# The one module that may import MLflow: the model file MLflow itself loads to serve a version.
MLFLOW_MODEL_FILE = "eul.stores.registry.pyfunc_model"
# Roles from the bottom up: a package may import its own role and those below it, never above.
OUTSIDE = {"flows", "tasks", "benchmarks"}
ROLES: dict[str, int] = {
    "eul.runtime": 0,
    "eul.data": 1,
    "eul.model": 2,
    "eul.layers": 1,
    "eul.methods": 3,
    "eul.fusion": 3,
    "eul.evaluate": 3,
    "eul.params": 4,
    "eul.stores": 5,
    "eul.pipeline": 6,
    "eul.bench": 7,
    "eul.cli": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _in_type_checking(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(name: str) -> set[str]:
    """Every module `name` imports, at the top or inside a function (not under TYPE_CHECKING):
    an import made late still ties the two modules together."""
    tree = ast.parse(MODULES[name].read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found: set[str] = set()
    for node in ast.walk(tree):
        if _in_type_checking(node, parents):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def eul_edges() -> dict[str, set[str]]:
    """Module -> the `eul` modules (not packages' empty `__init__`) it imports."""
    edges: dict[str, set[str]] = {}
    for name in MODULES:
        targets = {t for t in imports_of(name) if t in MODULES and t != name}
        edges[name] = {t for t in targets if MODULES[t].name != "__init__.py" or _has_code(t)}
    return edges


def _has_code(name: str) -> bool:
    body = ast.parse(MODULES[name].read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def role(name: str) -> tuple[str, int] | None:
    for prefix, rank in sorted(ROLES.items(), key=lambda item: -len(item[0])):
        if name == prefix or name.startswith(prefix + "."):
            return prefix, rank
    return None


def test_every_package_has_a_role() -> None:
    unplaced = [n for n in MODULES if n != "eul" and role(n) is None]
    assert unplaced == []


def test_importing_every_eul_module_loads_neither_prefect_nor_mlflow() -> None:
    names = [n for n in MODULES if n != MLFLOW_MODEL_FILE]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('prefect', 'mlflow') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"
    assert len(names) > 40


def test_nothing_under_eul_imports_flows_tasks_or_benchmarks() -> None:
    upward = {
        name: sorted(
            t for t in imports_of(name) if t.split(".")[0] in {"flows", "tasks", "benchmarks"}
        )
        for name in MODULES
    }
    assert {name: found for name, found in upward.items() if found} == {}


def test_no_package_imports_a_higher_role() -> None:
    violations = []
    for name, targets in eul_edges().items():
        own = role(name)
        for target in targets:
            theirs = role(target)
            if own and theirs and theirs[1] > own[1]:
                violations.append(f"{name} -> {target}")
    assert sorted(violations) == []


def test_no_import_circle() -> None:
    edges = eul_edges()
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                circles.append(stack[stack.index(target) :] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert [" -> ".join(c) for c in circles] == []


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    """The rules above would pass on a graph they cannot read; this one they must reject."""
    sample = ast.parse("from flows.batch import x\nimport eul.cli.main\n")
    names = {a.name for n in ast.walk(sample) if isinstance(n, ast.Import) for a in n.names}
    assert "eul.cli.main" in names and role("eul.cli.main") == ("eul.cli", 8)
    assert role("eul.stores.log.store")[1] < role("eul.pipeline.context")[1]
    assert eul_edges()  # the graph of the real package is not empty
    assert any(eul_edges().values())
