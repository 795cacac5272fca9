"""The shape of the package: no import cycle between modules, and layers imported only downwards.

Read from the source with ``ast`` (nothing is imported), so a failure names the modules and the
lines, whatever is installed. The layer order is shared/STYLE.md's::

    errors, utils -> audio -> features -> augment -> data -> models, losses -> train, eval
        -> inference, export, viz, convert -> serve -> cli

A module imports a package's ``__init__`` as well as the module it names (Python runs it first),
so ``from speakerprint.viz.curves import x`` is an edge to ``speakerprint.viz`` too. Imports under
``if TYPE_CHECKING:`` never run and are not counted. The root package ``speakerprint`` is the lazy
facade every module loads first; edges to it are not counted.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
ROOT = "speakerprint"

# Rank of each top-level part of the package: a module may import modules of its own rank or
# lower, never higher. convert/ builds bundles from other toolkits' checkpoints (needs models/
# and features/), the ONNX runtime is inference without torch, serve/ is an HTTP layer over
# inference/ as cli/ is a command-line one.
LAYERS: dict[str, int] = {
    "errors": 0,
    "utils": 0,
    "audio": 1,
    "features": 2,
    "augment": 3,
    "data": 4,
    "models": 5,
    "losses": 5,
    "train": 6,
    "eval": 6,
    "inference": 7,
    "onnx_runtime": 7,
    "export": 7,
    "viz": 7,
    "convert": 7,
    "hub": 7,
    "serve": 8,
    "diarize": 8,
    "cli": 9,
    "__main__": 9,
}

# Known cycles in files other engineers are redesigning in the same step (issue 22); the lead
# deletes each entry once its branch is merged. Each entry is a set of modules that may import each
# other (a strongly connected component of the import graph may be any part of one entry).
KNOWN_LAYER_VIOLATIONS: set[tuple[str, str]] = {
    # issue 22: the loop hands viz's curves drawer to train.tracking.RunLog (tracking no longer
    # imports viz), lazily and only when a run starts. To go: the caller of train() (cli/) hands
    # the drawer in, once the loop's redesign takes one.
    ("speakerprint.train.loop", "speakerprint.viz"),
    ("speakerprint.train.loop", "speakerprint.viz.curves"),
}


@dataclass(frozen=True)
class Import:
    target: str  # the module imported (a module of the package, or a package)
    line: int
    module_level: bool  # False: inside a function or method, run when called


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The module of the package that ``name`` names, or its nearest enclosing one."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str) -> list[Import]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit_one(sub, module_level)
                continue
            visit_one(child, module_level)

    def visit_one(node: ast.AST, module_level: bool) -> None:
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import name`: name is a submodule of pkg, or else an attribute of pkg.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for name in names:
            if name != ROOT and not name.startswith(ROOT + "."):
                continue
            target = _resolve(name)
            if target is None or target == ROOT:
                continue
            found.append(Import(target, node.lineno, module_level))
            # The packages above the target run first, unless they enclose this module already.
            parts = target.split(".")
            for i in range(2, len(parts)):
                package_name = ".".join(parts[:i])
                if module != package_name and not module.startswith(package_name + "."):
                    found.append(Import(package_name, node.lineno, module_level))
        inner = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        visit(node, module_level and not inner)

    visit(ast.parse(path.read_text(encoding="utf-8"), str(path)), True)
    return [imp for imp in found if imp.target != module]


IMPORTS = {module: _imports(module) for module in MODULES}


def _components(edges: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan): the modules that
    import each other, directly or not."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return components


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component."""
    return [_one_cycle(component, edges) for component in _components(edges)]


def _one_cycle(component: set[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest cycle through the first module of a component (breadth-first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(edges.get(v, set()) & component):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if w not in previous:
                    previous[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle in {component}")  # pragma: no cover


def _layer(module: str) -> int:
    part = module.split(".")[1]
    if part not in LAYERS:
        raise AssertionError(f"{module}: its part {part!r} has no layer in LAYERS; add one")
    return LAYERS[part]


def test_the_walker_sees_module_and_function_level_imports():
    """The walk must find what it is meant to check, or every test below passes vacuously."""
    loop = {(imp.target, imp.module_level) for imp in IMPORTS["speakerprint.train.loop"]}
    assert ("speakerprint.train.config", True) in loop
    assert ("speakerprint.train", True) not in loop  # its own package encloses it
    cli = {(imp.target, imp.module_level) for imp in IMPORTS["speakerprint.cli.main"]}
    assert any(not level for _, level in cli), "function-level imports of cli/main.py not seen"
    assert len(MODULES) > 100
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


EDGES = {module: {imp.target for imp in imports} for module, imports in IMPORTS.items()}


def test_no_import_cycle_between_modules():
    unexpected = list(_components(EDGES))
    assert not unexpected, "import cycles (module-level and function-level imports):\n" + "\n".join(
        " -> ".join(_one_cycle(component, EDGES)) + f"  ({len(component)} modules in all: "
        f"{', '.join(sorted(component))})"
        for component in unexpected
    )


def _upward_imports() -> list[tuple[str, Import]]:
    return [
        (module, imp)
        for module, imports in IMPORTS.items()
        if module != ROOT
        for imp in imports
        if _layer(imp.target) > _layer(module)
    ]


def test_imports_go_down_the_layers():
    """Module-level and function-level imports alike: a lazy import is still a dependency."""
    violations = [
        f"{MODULES[module].relative_to(SRC)}:{imp.line}: {module} imports {imp.target}, a "
        f"higher layer{'' if imp.module_level else ' (inside a function)'}"
        for module, imp in _upward_imports()
        if (module, imp.target) not in KNOWN_LAYER_VIOLATIONS
    ]
    assert not violations, "imports against the layer order of STYLE.md:\n" + "\n".join(
        sorted(set(violations))
    )


def test_known_layer_violations_are_still_there():
    """An entry of KNOWN_LAYER_VIOLATIONS that no longer happens must be deleted."""
    found = {(module, imp.target) for module, imp in _upward_imports()}
    gone = KNOWN_LAYER_VIOLATIONS - found
    assert not gone, f"delete from KNOWN_LAYER_VIOLATIONS: {sorted(gone)}"


def test_every_part_of_the_package_has_a_layer():
    parts = {module.split(".")[1] for module in MODULES if module != ROOT}
    assert parts <= set(LAYERS), f"parts without a layer: {sorted(parts - set(LAYERS))}"
