"""The layers import one way, and no module imports itself back through others.

Read from the source with `ast`, so an import inside a function or under TYPE_CHECKING counts as much
as one at the top: a hidden import is still a dependency. docs/architecture.md draws the same picture.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Import name -> folder, as pyproject.toml's package-dir maps them.
FOLDERS = {
    "closedloop": ROOT / "closedloop",
    "closedloop.controller": ROOT / "controller",
    "closedloop.drivers": ROOT / "drivers",
    "closedloop.planners": ROOT / "planners",
    "closedloop.simulators": ROOT / "simulators",
}
LAYERS = ("drivers", "planners", "simulators", "controller")

# Which top-level layers each layer may import (besides itself and the shared root modules).
ALLOWED_LAYERS = {
    # `import closedloop` and `python -m closedloop` are the entry points: they may reach everything.
    "entry": {"drivers", "planners", "simulators", "controller"},
    "root": set(),
    "drivers": set(),
    "planners": set(),
    "simulators": {"drivers"},
    "controller": {"drivers", "planners", "simulators"},
}
# controller's parts by rank: a part imports only parts of a lower rank (and itself).
CONTROLLER_RANKS = {
    "protocol": 0,
    "results_csv": 0,  # reads a results file; imports no other part
    "store": 0,
    "engine": 1,
    "warm_start": 1,  # checks and records earlier results; engine and warm_start do not import each other
    "report": 2,  # reads a campaign file through the store; `Campaign.report()` writes one
    "campaign": 3,
    "dryrun": 4,
    "offline": 4,
    "serve": 4,  # the dashboard reads campaigns (campaign, report, store); the cli starts it
    "cli": 5,
}


def module_files() -> dict[str, Path]:
    """Every module of the installed tree, by its import name."""
    modules: dict[str, Path] = {}
    for prefix, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            if prefix == "closedloop" and parts and parts[0] in LAYERS:
                continue
            modules[".".join([prefix, *parts])] = path
    return modules


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (a `from package import module` counts as the module)."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in known)
    return {m for m in found if m in known or m.split(".")[0] in ("controller", "drivers", "planners", "simulators")}


def graph() -> dict[str, set[str]]:
    files = module_files()
    known = set(files)
    return {name: imports_of(path, name, known) - {name} for name, path in files.items()}


ENTRY_POINTS = {"closedloop", "closedloop.__main__"}


def layer_of(module: str) -> str:
    if module in ENTRY_POINTS:
        return "entry"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "root"


def controller_part(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "controller":
        return None
    return parts[2]


def test_nothing_imports_the_old_top_level_names() -> None:
    stray = {m: sorted(i for i in imports if i.split(".")[0] != "closedloop") for m, imports in graph().items()}
    assert not any(stray.values()), {m: i for m, i in stray.items() if i}


def test_layers_import_only_downwards() -> None:
    wrong = []
    for module, imports in graph().items():
        mine = layer_of(module)
        for imported in imports:
            theirs = layer_of(imported)
            if theirs not in (mine, "root", "entry") and theirs not in ALLOWED_LAYERS[mine]:
                wrong.append(f"{module} imports {imported} ({mine} may not import {theirs})")
            if theirs == "entry" and mine != "entry":
                wrong.append(f"{module} imports {imported} (the entry points are imported by no layer)")
    assert not wrong, "\n".join(wrong)


def test_controller_parts_import_only_lower_ranks() -> None:
    wrong = []
    for module, imports in graph().items():
        mine = controller_part(module)
        if mine is None:
            continue
        assert mine in CONTROLLER_RANKS, f"{module}: controller part {mine!r} has no rank in this test"
        for imported in imports:
            theirs = controller_part(imported)
            if theirs is None or theirs == mine:
                continue
            if CONTROLLER_RANKS[theirs] >= CONTROLLER_RANKS[mine]:
                wrong.append(f"{module} imports {imported} ({mine} may not import {theirs})")
    assert not wrong, "\n".join(wrong)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each one an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles_between_modules() -> None:
    edges = graph()
    # A package's __init__ re-exports its modules, and they import siblings by their own names, never
    # through the package: so the edge from a module up to its own package's __init__ is the only kind
    # left out (it is how Python itself loads a submodule).
    trimmed = {m: {i for i in imports if not m.startswith(i + ".")} for m, imports in edges.items()}
    assert not cycles(trimmed), "\n".join(" <-> ".join(c) for c in cycles(trimmed))


def test_no_import_circles_between_controller_parts() -> None:
    parts: dict[str, set[str]] = defaultdict(set)
    for module, imports in graph().items():
        mine = controller_part(module)
        if mine is None:
            continue
        parts[mine] |= {p for i in imports if (p := controller_part(i)) not in (None, mine)}
    assert not cycles(parts), cycles(parts)


def test_the_checker_sees_a_circle_and_a_wrong_way_import() -> None:
    """The checks above must be able to fail: a made-up graph with both faults trips them."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert layer_of("closedloop.drivers.base") == "drivers"
    assert "controller" not in ALLOWED_LAYERS["drivers"]
    assert CONTROLLER_RANKS["engine"] < CONTROLLER_RANKS["cli"]


def test_pyproject_lists_every_package_on_disk() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    on_disk = {name for name, path in module_files().items() if path.name == "__init__.py"}
    assert listed == on_disk, f"missing from pyproject: {sorted(on_disk - listed)}; not on disk: {sorted(listed - on_disk)}"
    assert config["package-dir"] == {name: str(folder.relative_to(ROOT)) for name, folder in FOLDERS.items()}
