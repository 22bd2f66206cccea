"""The package's layers, as each package docstring states them (issue 12): no import circle, and
no package importing one above it. Read from the source with `ast`, so imports inside functions
and under TYPE_CHECKING count too: a circle hidden there is still a circle for the reader.

One exception, inside one package only: a context type may name its parts for type checking
while the parts take the context (``endpoint.link.Context.services``, the version contexts'
state): those are one unit, typed both ways. Across packages even a type-only circle fails."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bess_gateway

ROOT = Path(bess_gateway.__file__).resolve().parent
VERSIONS = ("v16", "v201", "v21")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def type_checking_nodes(tree: ast.Module) -> set[ast.AST]:
    """The import statements under `if TYPE_CHECKING:`."""
    found: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                found.update(ast.walk(stmt))
    return found


def imports_of(name: str, *, typing_only: bool | None = None) -> set[str]:
    """The modules of ours `name` imports (a name imported from a package counts as its module
    when it is one, else as the package). `typing_only`: None all imports, True only those
    under TYPE_CHECKING, False the others."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def add(target: str) -> None:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_nodes = type_checking_nodes(tree)
    for node in ast.walk(tree):
        if typing_only is not None and (node in typing_nodes) != typing_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if not base.startswith("bess_gateway"):
                continue
            for alias in node.names:
                add(f"{base}.{alias.name}")
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def layer(name: str) -> str:
    """The layer a module belongs to: its subpackage; the OCPP versions each apart from the wire
    parts (framing, errors, schemas, rpc); top-level modules by their own name."""
    parts = name.split(".")
    if len(parts) == 1:
        return "bess_gateway"
    if parts[1] == "ocpp":
        return f"ocpp.{parts[2]}" if len(parts) > 2 and parts[2] in VERSIONS else "ocpp.wire"
    return parts[1]


UPPER = {"gateway", "cli", "__main__", "tools", "demo"}
TRANSLATORS = {f"ocpp.{v}" for v in VERSIONS}
# layer -> layers it must never import (the package docstrings' "May import" lines, inverted)
FORBIDDEN: dict[str, set[str]] = {
    "domain": UPPER | TRANSLATORS | {"endpoint", "journal", "ops", "maintenance", "security",
                                     "ocpp.wire", "sim"},
    "journal": UPPER | TRANSLATORS | {"endpoint", "ops", "maintenance", "security", "sim"},
    "ocpp.wire": UPPER | TRANSLATORS | {"endpoint", "journal", "domain", "ops", "maintenance",
                                        "security", "control", "sim"},
    "security": UPPER | TRANSLATORS | {"endpoint", "ops", "maintenance", "sim"},
    "maintenance": UPPER | TRANSLATORS | {"endpoint", "ops", "ocpp.wire", "sim"},
    "endpoint": UPPER | TRANSLATORS | {"ops", "sim"},
    "control": UPPER | TRANSLATORS | {"endpoint", "journal", "domain", "ops", "maintenance",
                                      "security", "ocpp.wire", "sim"},
    "ocpp.v16": UPPER | {"ocpp.v201", "ocpp.v21", "ops", "sim"},
    "ocpp.v201": UPPER | {"ocpp.v16", "ocpp.v21", "ops", "sim"},
    "ocpp.v21": UPPER | {"ocpp.v16", "ops", "sim"},  # 2.1 builds on 2.0.1
    "ops": UPPER | TRANSLATORS | {"sim"},
    "sim": UPPER | TRANSLATORS | {"endpoint", "journal", "domain", "ops", "maintenance",
                                  "security", "ocpp.wire", "control", "config"},
}


def test_the_graph_sees_the_package() -> None:
    # A guard for the two tests below: a parser that found no edges would pass them vacuously.
    assert "bess_gateway.endpoint.link" in GRAPH["bess_gateway.gateway"]
    assert "bess_gateway.ocpp.rpc" in GRAPH["bess_gateway.endpoint.link"]
    assert "bess_gateway.ocpp.v201.endpoint" in GRAPH["bess_gateway.ocpp.v21.endpoint"]
    # metrics names the endpoint class for type checking only
    assert "bess_gateway.endpoint.link" in imports_of("bess_gateway.ops.metrics", typing_only=True)
    assert "bess_gateway.endpoint.link" not in imports_of("bess_gateway.ops.metrics",
                                                          typing_only=False)


def package_of(name: str) -> str:
    return name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]


# The graph circles are looked for in: every import, but a type-only one within its own package.
CIRCLE_GRAPH = {
    name: imports_of(name, typing_only=False)
    | {dep for dep in imports_of(name, typing_only=True) if package_of(dep) != package_of(name)}
    for name in MODULES
}


def test_no_import_circles() -> None:
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for dep in sorted(CIRCLE_GRAPH[name]):
            if state.get(dep) == 1:
                circles.append([*path[path.index(dep):], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[name] = 2

    for name in sorted(CIRCLE_GRAPH):
        if name not in state:
            visit(name)
    assert circles == [], "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("low", sorted(FORBIDDEN))
def test_no_layer_imports_one_above_it(low: str) -> None:
    wrong = sorted(f"{a} -> {b}" for a, deps in GRAPH.items() if layer(a) == low
                   for b in deps if layer(b) in FORBIDDEN[low])
    assert wrong == [], f"{low} imports what its package docstring rules out"


def test_every_package_says_what_it_may_import() -> None:
    for path in ROOT.rglob("__init__.py"):
        if path.parent == ROOT:
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if path.parent.parent.name == "ocpp":  # the version packages: ocpp/__init__.py says it
            assert doc, f"{path} has no docstring"
            continue
        assert "may import" in doc.lower(), f"{path}: the docstring says nothing of its imports"
