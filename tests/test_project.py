"""Project-wide rules: exported names, pure modules, test configuration."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import mmstream

ROOT = Path(__file__).parent.parent
PACKAGE = ROOT / "mmstream"

#: modules that must stay sans-I/O: no httpx, no anyio, no await (STYLE.md).
PURE = (
    "content",
    "responses",
    "request",
    "sse",
    "errors",
    "metadata",
    "_secret",
    "_lazy",
    "protocols",
)
#: the pure modules of the media package (its I/O is in prepare.py and download.py).
PURE_MEDIA = ("__init__", "policy", "sniff", "netguard", "cache", "fit")


def test_all_is_sorted_and_complete() -> None:
    names = mmstream.__all__
    assert names == sorted(names)
    public = {n for n in dir(mmstream) if not n.startswith("_")} - {"annotations"}
    assert set(names) >= public - {
        "content",
        "responses",
        "request",
        "sse",
        "llm",
        "metadata",
        "transport",
        "images",
        "serde",
        "cli",
        "pipeline",
        "testing",
        "batch",
        "web",
        "protocols",
    }


def test_public_classes_report_the_package_as_their_module() -> None:
    for name in mmstream.__all__:
        value = getattr(mmstream, name)
        if isinstance(value, type):
            assert value.__module__ == "mmstream", name


def _pure_files() -> list[Path]:
    files = [PACKAGE / f"{name}.py" for name in PURE]
    files += [PACKAGE / "media" / f"{name}.py" for name in PURE_MEDIA]
    files += list((PACKAGE / "providers").glob("*.py"))
    return files


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _runtime_nodes(tree: ast.Module, *, skip_async: bool) -> list[ast.stmt]:
    """The module's statements, without ``if TYPE_CHECKING:`` blocks (and async defs)."""
    kept: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if skip_async and isinstance(node, ast.AsyncFunctionDef):
            continue
        kept.append(node)
    return kept


@pytest.mark.parametrize("path", _pure_files(), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_pure_modules_import_no_io_and_never_await(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = _runtime_nodes(tree, skip_async=False)
    for node in nodes:
        for name in _imports(node):
            root = name.split(".")[0]
            assert root not in {"httpx", "anyio", "trio", "asyncio", "httpcore"}, (
                f"{path.name} imports {name}"
            )
            if root == "mmstream" and name != "mmstream":
                target = name.split(".")[1]
                media = ["media", *(f"media.{m}" for m in PURE_MEDIA)]
                assert target in (*PURE, "providers", "_version") or name[9:] in media, (
                    f"{path.name} imports {name}, which is not a pure module"
                )
        awaits = [
            n for n in ast.walk(node) if isinstance(n, (ast.Await, ast.AsyncFor, ast.AsyncWith))
        ]
        assert not awaits, f"{path.name} awaits"


def test_pure_modules_load_without_httpx_or_anyio_in_a_fresh_process() -> None:
    """Load the pure modules by file, bypassing the package, and check sys.modules."""
    code = textwrap.dedent(
        f"""
        import importlib.util, sys, types
        pkg = types.ModuleType("mmstream"); pkg.__path__ = [{str(PACKAGE)!r}]
        sys.modules["mmstream"] = pkg
        prov = types.ModuleType("mmstream.providers")
        prov.__path__ = [{str(PACKAGE / "providers")!r}]
        sys.modules["mmstream.providers"] = prov
        import mmstream.content, mmstream.responses, mmstream.request, mmstream.sse
        import mmstream.errors, mmstream.providers.base, mmstream.providers.offline
        import mmstream.media, mmstream.media.fit, mmstream.providers.openai
        bad = sorted(m for m in ("httpx", "anyio", "trio", "httpcore") if m in sys.modules)
        print(",".join(bad))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_importing_mmstream_does_not_import_pillow_or_cattrs() -> None:
    code = "import sys, mmstream; print(sorted(m for m in ('PIL', 'cattrs') if m in sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_backends_are_pinned_to_asyncio_and_trio(request: pytest.FixtureRequest) -> None:
    """The anyio_backend fixture is parametrized explicitly (not discovered)."""
    from tests import conftest

    params: Any = conftest.anyio_backend._fixture_function_marker.params
    assert [p.values[0] for p in params] == ["asyncio", "trio"]
    ini = request.config.getini("filterwarnings")
    assert "error" in ini


def test_an_unclosed_async_generator_fails_the_suite(pytester: pytest.Pytester) -> None:
    """With warnings as errors, a generator leaked on trio fails its test."""
    pytester.makeini(
        """
        [pytest]
        addopts = -p no:asyncio -p no:cacheprovider
        anyio_mode = auto
        filterwarnings = error
        """
    )
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture(params=["asyncio", "trio"])
        def anyio_backend(request):
            return request.param
        """
    )
    pytester.makepyfile(
        """
        import gc

        async def numbers():
            for n in range(10):
                yield n

        async def test_leak():
            async for n in numbers():
                break  # the generator is left open: no aclosing
            gc.collect()
        """
    )
    result = pytester.runpytest_subprocess("-v")
    # trio reports the leaked generator; under filterwarnings=error that fails the run.
    result.stdout.fnmatch_lines(["*test_leak?trio?*FAILED*"])
    assert result.ret != 0


def _lines_of_code(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a docstring."""
    import io
    import tokenize

    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        value = getattr(node, "value", None)
        if (
            isinstance(node, ast.Expr)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            docstrings.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    skipped = {
        tokenize.COMMENT,
        tokenize.NL,
        tokenize.NEWLINE,
        tokenize.INDENT,
        tokenize.DEDENT,
        tokenize.ENDMARKER,
    }
    code: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skipped:
            code.update(range(token.start[0], token.end[0] + 1))
    return len(code - docstrings)


def test_lines_of_code_count_code_only() -> None:
    source = textwrap.dedent(
        '''\
        """Doc

        more."""

        # a comment
        x = 1  # code


        def f():
            """Doc."""
            return (
                2
            )
        '''
    )
    assert _lines_of_code(source) == 5


def test_no_module_is_over_600_lines_of_code() -> None:
    """A module that outgrows 600 lines of code has more than one concept in it: split it."""
    sizes = {
        path.relative_to(ROOT).as_posix(): _lines_of_code(path.read_text(encoding="utf-8"))
        for path in (ROOT / "mmstream").rglob("*.py")
    }
    assert {name: size for name, size in sizes.items() if size > 600} == {}
