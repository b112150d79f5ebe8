"""The architecture as a test: every import in ``mmstream/`` goes down the layers, never up.

Each module of the package belongs to a layer; a layer may import only the
layers listed for it. Every import counts: at the top of a module, inside a
function, and under ``if TYPE_CHECKING:``. The import graph has no cycle.
``docs/concepts.md`` draws the same table; a test checks that they agree.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "mmstream"

#: layer -> the module names (and packages, by prefix) in it, lowest layer first.
LAYERS: dict[str, tuple[str, ...]] = {
    "values": (
        "mmstream.content",
        "mmstream.responses",
        "mmstream.request",
        "mmstream.metadata",
        "mmstream.errors",
        "mmstream._secret",
        "mmstream._version",
        "mmstream._lazy",
    ),
    "protocols": ("mmstream.protocols",),
    "codecs": ("mmstream.sse",),
    "media": ("mmstream.media",),
    "providers": ("mmstream.providers",),
    "transport": ("mmstream.transport", "mmstream._offline_transport"),
    "endpoint": ("mmstream._endpoint",),
    "middleware": ("mmstream.middleware",),
    "testing": ("mmstream.testing",),
}
#: a module in no layer above is part of the facade (llm, the stream, _sync, pipeline, serde,
#: cli, images, batch, web, the package itself): the top, which may import every layer but testing.
FACADE = "facade"

#: layer -> the layers it may import (itself included).
ALLOWED: dict[str, frozenset[str]] = {
    "values": frozenset({"values"}),
    "protocols": frozenset({"values", "protocols"}),
    "codecs": frozenset({"values", "codecs"}),
    "media": frozenset({"values", "protocols", "media", "transport"}),
    "providers": frozenset({"values", "protocols", "codecs", "media", "providers"}),
    "transport": frozenset({"values", "transport"}),
    "endpoint": frozenset(
        {"values", "protocols", "codecs", "media", "providers", "transport", "endpoint"}
    ),
    "middleware": frozenset({"values", "protocols", "providers", "middleware"}),
    FACADE: frozenset(
        {
            "values",
            "protocols",
            "codecs",
            "media",
            "providers",
            "transport",
            "endpoint",
            "middleware",
            FACADE,
        }
    ),
    "testing": frozenset({*LAYERS, FACADE}),
}

#: arrows the table forbids but the project keeps, each with its reason.
EXCEPTIONS: dict[tuple[str, str], str] = {
    # `mmstream serve` runs the loopback test server for people trying a client out.
    ("mmstream.cli", "mmstream.testing._cli"): "the serve command",
}
#: type-only references inside one layer that close a loop, each with its reason.
TYPE_ONLY_LOOPS: dict[tuple[str, str], str] = {
    # An error's `.partial` is a ChatResponse, whose `.message` is a ChatMessage, whose
    # content raises InvalidImageError: three values typed in terms of each other.
    ("mmstream.errors", "mmstream.responses"): "MMStreamError.partial is a ChatResponse",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    """The layer of a module of the package (the facade when no layer names it)."""
    for layer, names in LAYERS.items():
        if any(module == name or module.startswith(name + ".") for name in names):
            return layer
    return FACADE


def _is_type_checking(test: ast.expr) -> bool:
    return "TYPE_CHECKING" in ast.unparse(test)


def imports(path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported module of the package, line, whether under ``TYPE_CHECKING``) of a file."""

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for statement in child.body:
                    yield from walk_one(statement, True)
                for statement in child.orelse:
                    yield from walk_one(statement, type_only)
                continue
            yield from walk_one(child, type_only)

    def walk_one(node: ast.AST, type_only: bool) -> Iterator[tuple[str, int, bool]]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno, type_only
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module
            if node.level:  # a relative import
                package = _module_name(path).split(".")
                if path.name != "__init__.py":
                    package.pop()
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, node.module])
            for alias in node.names:
                child = f"{base}.{alias.name}"
                yield (child if child in MODULES else base), node.lineno, type_only
        yield from walk(node, type_only)

    tree = ast.parse(path.read_text(encoding="utf-8"))
    for name, line, type_only in walk(tree, False):
        if name == "mmstream" or name.startswith("mmstream."):
            yield name, line, type_only


def graph(*, with_type_only: bool = True) -> dict[str, set[str]]:
    """module -> the modules of the package it imports."""
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for target, _, type_only in imports(path):
            if target == name or (type_only and not with_type_only):
                continue
            if type_only and (name, target) in TYPE_ONLY_LOOPS:
                continue
            edges[name].add(target)
    return edges


def test_every_module_is_read() -> None:
    assert "mmstream.providers.base" in MODULES
    assert "mmstream.transport" in MODULES
    assert layer_of("mmstream.providers.openai") == "providers"
    assert layer_of("mmstream.llm") == FACADE
    llm = {target: type_only for target, _, type_only in imports(MODULES["mmstream.llm"])}
    assert llm["mmstream._endpoint"] is False  # `from mmstream import _endpoint`
    base = {(target, t) for target, _, t in imports(MODULES["mmstream.providers.base"])}
    assert ("mmstream.request", False) in base and ("mmstream.request", True) in base
    endpoint = imports(MODULES["mmstream._endpoint"])
    assert ("mmstream.protocols", True) in {(target, t) for target, _, t in endpoint}


def _violations() -> list[str]:
    bad: list[str] = []
    for name, path in MODULES.items():
        source = layer_of(name)
        for target, line, type_only in imports(path):
            target_layer = layer_of(target)
            if target_layer in ALLOWED[source] or (name, target) in EXCEPTIONS:
                continue
            how = " (under TYPE_CHECKING)" if type_only else ""
            bad.append(
                f"{path.relative_to(ROOT)}:{line}: {source} imports {target} ({target_layer}){how}"
            )
    return bad


def test_every_import_goes_down_the_layers() -> None:
    assert _violations() == []


@pytest.mark.parametrize(
    ("source", "forbidden"),
    [
        # what the architecture promises, spelled out
        ("providers", {"transport", "endpoint", "middleware", FACADE, "testing"}),
        ("values", set(LAYERS) - {"values"} | {FACADE}),
        ("transport", {"providers", "endpoint", "middleware", FACADE, "testing"}),
        ("protocols", {"providers", "transport", "media", FACADE, "testing"}),
    ],
)
def test_the_promised_arrows_are_forbidden(source: str, forbidden: set[str]) -> None:
    assert not ALLOWED[source] & forbidden


def test_the_product_never_imports_testing() -> None:
    for name, path in MODULES.items():
        if layer_of(name) == "testing":
            continue
        for target, line, _ in imports(path):
            if layer_of(target) == "testing":
                assert (name, target) in EXCEPTIONS, f"{path.relative_to(ROOT)}:{line}"


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of the graph, as a path, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycle_even_under_type_checking() -> None:
    assert _cycle(graph()) is None


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_each_type_only_loop_kept_is_needed() -> None:
    """Without its exception, each kept loop is a cycle: the list holds nothing stale."""
    for source, target in TYPE_ONLY_LOOPS:
        edges = graph()
        edges[source].add(target)
        assert _cycle(edges) is not None, (source, target)


def test_the_type_only_loops_kept_are_type_only() -> None:
    """The exceptions are real (so the list cannot rot) and never runtime imports."""
    for source, target in TYPE_ONLY_LOOPS:
        found = [type_only for t, _, type_only in imports(MODULES[source]) if t == target]
        assert found and all(found), (source, target)
    for source, target in EXCEPTIONS:
        assert any(t == target for t, _, _ in imports(MODULES[source])), (source, target)


def test_docs_concepts_draws_the_same_layers() -> None:
    """The table in docs/concepts.md lists each layer with the layers it may import."""
    text = (ROOT / "docs" / "concepts.md").read_text(encoding="utf-8")
    rows = {
        match.group(1): {name.strip() for name in match.group(2).split(",") if name.strip()}
        for match in re.finditer(r"^\| \*\*(\w+)\*\* \|[^|]*\| ([^|]*) \|$", text, re.M)
    }
    expected = {
        layer: set(ALLOWED[layer]) - {layer} for layer in [*LAYERS, FACADE] if layer != "testing"
    }
    expected["testing"] = {"all"}
    drawn = {
        layer: ({"all"} if allowed == {"all"} else allowed - {"nothing"})
        for layer, allowed in rows.items()
    }
    assert drawn == expected
