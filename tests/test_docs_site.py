"""The documentation site: it builds strictly, lists every public name, shows no raw role.

The checks live in `docs/hooks/checks.py`, which `mkdocs build` runs as a hook (so
CI's build fails too); these tests build the real site, run the checks on their
own, and prove that each check fails when it should.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checks = _load("checks")
convert_roles = _load("convert_roles")


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    env.pop("MMSTREAM_DOCS_SKIP_CHECKS", None)
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real site, built once with `mkdocs build --strict` (and so with the checks)."""
    target = tmp_path_factory.mktemp("site")
    result = build(ROOT, target)
    assert result.returncode == 0, result.stdout + result.stderr
    return target


@pytest.fixture(scope="module")
def reference(site: Path) -> str:
    return (site / "api" / "index.html").read_text(encoding="utf-8")


# --- the real site -----------------------------------------------------------------------


def test_every_public_name_has_an_entry(reference: str) -> None:
    ids = checks.reference_ids(reference)
    assert checks.missing_from_reference(ids) == []
    # The list the check walks is the real one, not an empty loop.
    names = {f"{module}.{name}" for module, name in checks.public_names()}
    assert {"mmstream.MultiModalLLM", "mmstream.providers.Gemini", "mmstream.errors.APIError"} <= (
        names
    )
    assert len(names) > 80


@pytest.mark.parametrize(
    "name",
    [
        "mmstream.MultiModalLLM.complete",
        "mmstream.MultiModalLLM.stream_complete",
        "mmstream.MultiModalLLM.chat",
        "mmstream.MultiModalLLM.stream_chat",
        "mmstream.providers.OpenAI",
        "mmstream.providers.AzureOpenAI",
        "mmstream.providers.OpenAICompatible",
        "mmstream.providers.Anthropic",
        "mmstream.providers.Gemini",
        "mmstream.providers.Ollama",
        "mmstream.providers.Offline",
        "mmstream.providers.from_string",
        "mmstream.Secret",
        "mmstream.Timeouts",
    ],
)
def test_the_reference_lists(reference: str, name: str) -> None:
    assert f'id="{name}"' in reference


@pytest.mark.parametrize(
    ("twin", "original", "returns"),
    [
        ("chat", "achat", "ChatResponse"),
        ("complete", "acomplete", "CompletionResponse"),
        ("stream_chat", "astream_chat", "SyncStream"),
        ("stream_complete", "astream_complete", "SyncStream"),
    ],
)
def test_blocking_methods_link_to_their_async_original(
    reference: str, twin: str, original: str, returns: str
) -> None:
    start = reference.index(f'id="mmstream.MultiModalLLM.{twin}"')
    entry = reference[start : reference.index('class="doc doc-heading"', start + 100)]
    text = re.sub(r"<[^>]+>", "", entry)
    assert "Blocking twin of" in text
    assert f'href="#mmstream.MultiModalLLM.{original}"' in entry
    assert "self" not in text.split("Blocking twin", 1)[0]  # the signature, as users call it
    assert returns in text.split("Blocking twin", 1)[0]


def test_no_page_shows_a_raw_role(site: Path) -> None:
    allowed = checks.pending_roles(ROOT)
    shown = {
        page.relative_to(site).as_posix(): checks.html_role_findings(
            page.read_text(encoding="utf-8"), allowed
        )
        for page in site.rglob("*.html")
    }
    assert {page: roles for page, roles in shown.items() if roles} == {}


def test_no_returns_row_is_named_by_its_first_word() -> None:
    assert checks.named_returns(ROOT) == []


def test_the_site_has_the_extra_css(site: Path) -> None:
    assert (site / "assets" / "extra.css").is_file()
    assert 'href="../assets/extra.css"' in (site / "quickstart" / "index.html").read_text(
        encoding="utf-8"
    )
    assert not (site / "hooks").exists()  # the hooks are not published as pages


# --- roles: converted modules stay clean; the pending list only shrinks ------------------

CONVERTED = [path for path in checks.checked_files(ROOT) if path.suffix == ".py"]


@pytest.mark.parametrize("path", CONVERTED, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_sphinx_role_in_converted_sources(path: Path) -> None:
    assert checks.role_findings(ROOT, [path]) == []


def test_the_role_check_covers_the_converted_modules_and_the_pages() -> None:
    checked = {path.relative_to(ROOT).as_posix() for path in checks.checked_files(ROOT)}
    for name in ("mmstream/cli.py", "mmstream/errors.py", "mmstream/testing/_server.py"):
        assert name in checked
    assert "docs/api.md" in checked and "README.md" in checked
    assert not checked & set(checks.PENDING_ROLE_CONVERSION)


def test_every_module_is_checked_for_roles() -> None:
    """Every module of the package is converted: none is left out of the role check."""
    assert checks.PENDING_ROLE_CONVERSION == ()
    checked = {path.relative_to(ROOT).as_posix() for path in checks.checked_files(ROOT)}
    modules = {path.relative_to(ROOT).as_posix() for path in (ROOT / "mmstream").rglob("*.py")}
    assert modules <= checked


@pytest.mark.parametrize(
    "text",
    [
        ":class:`MMStreamError`",
        ":class:`~mmstream.ChatResponse`",
        ":meth:`http_status`",
        ":func:`mmstream.serde.to_json`",
        ":data:`mmstream.images.AZURE_POLICY`",
        ":mod:`mmstream.testing`",
        ":attr:`ChatResponse.text`",
        ":exc:`ValueError`",
        ":py:class:`Script`",
        ":class:`the server <mmstream.testing.TestServer>`",
    ],
)
def test_the_role_pattern_finds_every_role(text: str) -> None:
    assert [role for _, role in checks.find_roles(f"See {text} here.")] == [text]


@pytest.mark.parametrize(
    "text",
    ["[`Script`][mmstream.testing.Script]", "``name: value``", "a :class: word", "`x`:meth:"],
)
def test_the_role_pattern_leaves_other_text_alone(text: str) -> None:
    assert list(checks.find_roles(text)) == []


def test_html_roles_are_found_unless_a_pending_module_holds_them() -> None:
    page = "<p>See :class:<code>~mmstream.X</code> and :meth:<code>run</code>.</p>"
    assert checks.html_role_findings(page, set()) == [
        ":class:<code>~mmstream.X</code>",
        ":meth:<code>run</code>",
    ]
    assert checks.html_role_findings(page, {("class", "~mmstream.X")}) == [":meth:<code>run</code>"]


# --- each check fails the build when it should -------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project's docs and sources, to plant a defect in."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "docs", root / "docs")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "mmstream", root / "mmstream", ignore=ignore)
    shutil.copy(ROOT / "mkdocs.yml", root / "mkdocs.yml")
    shutil.copy(ROOT / "README.md", root / "README.md")
    return root


def test_the_build_fails_on_a_role_in_a_docstring(project: Path, tmp_path: Path) -> None:
    errors = project / "mmstream" / "errors.py"
    text = errors.read_text(encoding="utf-8")
    planted = text.replace("The root of every mmstream error.", "The root; see :class:`APIError`.")
    errors.write_text(planted, encoding="utf-8")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "Sphinx roles render as raw text" in result.stderr
    assert "mmstream/errors.py" in result.stderr and ":class:`APIError`" in result.stderr


def test_the_build_fails_on_a_role_in_a_page(project: Path, tmp_path: Path) -> None:
    page = project / "docs" / "cli.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee :func:`main`.\n", encoding="utf-8")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "docs/cli.md" in result.stderr and ":func:`main`" in result.stderr


def test_the_build_fails_on_a_returns_line_read_as_a_name(project: Path, tmp_path: Path) -> None:
    serde = project / "mmstream" / "serde.py"
    text = serde.read_text(encoding="utf-8")
    old = '    """The ``cls`` instance that [`to_json`][mmstream.serde.to_json] wrote."""'
    assert old in text
    new = (
        '    """The ``cls`` instance that [`to_json`][mmstream.serde.to_json] wrote.\n\n'
        '    Returns:\n        value: the instance of ``cls``.\n    """'
    )
    serde.write_text(text.replace(old, new), encoding="utf-8")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "mmstream.serde.from_json: Returns item named 'value'" in result.stderr


def test_the_build_fails_on_a_public_name_missing_from_the_reference(
    project: Path, tmp_path: Path
) -> None:
    api = project / "docs" / "api.md"
    text = api.read_text(encoding="utf-8")
    assert "::: mmstream.Secret\n" in text
    api.write_text(text.replace("::: mmstream.Secret\n", ""), encoding="utf-8")
    result = build(project, tmp_path / "site")
    assert result.returncode != 0
    assert "public names missing from the API reference" in result.stderr
    assert "mmstream.Secret" in result.stderr


# --- the conversion transform -----------------------------------------------------------

ANCHORS = {
    "mmstream.Secret": "mmstream.Secret",
    "mmstream._secret.Secret": "mmstream.Secret",
    "mmstream.testing.TestServer": "mmstream.testing.TestServer",
    "mmstream.testing.TestServer.start_in_thread": "mmstream.testing.TestServer.start_in_thread",
    "mmstream.testing._server.TestServer.start_in_thread": (
        "mmstream.testing.TestServer.start_in_thread"
    ),
    "mmstream.ChatResponse": "mmstream.ChatResponse",
    "mmstream.errors.APIError": "mmstream.errors.APIError",
}


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        # ~ shows the last part; a full mmstream path is used as it is
        (
            "mmstream.errors",
            ":class:`~mmstream.ChatResponse`",
            "[`ChatResponse`][mmstream.ChatResponse]",
        ),
        # no ~: the target as written; a name without a module is found in the module
        ("mmstream.errors", ":class:`APIError`", "[`APIError`][mmstream.errors.APIError]"),
        # an import path that an entry re-exports takes that entry's anchor
        ("mmstream._secret", ":class:`Secret`", "[`Secret`][mmstream.Secret]"),
        # a title is kept
        (
            "mmstream.errors",
            ":class:`the error <mmstream.errors.APIError>`",
            "[`the error`][mmstream.errors.APIError]",
        ),
        # not in the reference: plain code, shown as written
        ("mmstream.errors", ":func:`attrs.evolve`", "`attrs.evolve`"),
        ("mmstream.errors", ":data:`~mmstream.images.AZURE_POLICY`", "`AZURE_POLICY`"),
    ],
)
def test_convert_rewrites_a_role(module: str, source: str, expected: str) -> None:
    converter = convert_roles.Converter(ANCHORS)
    text, _ = converter.convert(f'"""See {source} here."""\n', module)
    assert text == f'"""See {expected} here."""\n'


def test_convert_resolves_a_method_inside_its_class() -> None:
    source = 'class TestServer:\n    """Use it from a thread (:meth:`start_in_thread`)."""\n'
    text, notes = convert_roles.Converter(ANCHORS).convert(source, "mmstream.testing._server")
    assert "[`start_in_thread`][mmstream.testing.TestServer.start_in_thread]" in text
    assert notes == []


def test_convert_wraps_a_docstring_line_it_made_too_long() -> None:
    line = (
        "        script: the default answer shape for every request, as for "
        ":class:`~mmstream.testing.TestServer`."
    )
    source = f'def f():\n    """Do.\n\n    Args:\n{line}\n    """\n'
    text, _ = convert_roles.Converter(ANCHORS).convert(source, "mmstream.testing._server")
    lines = text.splitlines()
    assert all(len(item) <= 100 for item in lines)
    assert lines[4] == "        script: the default answer shape for every request, as for"
    assert lines[5] == "            [`TestServer`][mmstream.testing.TestServer]."


def test_convert_notes_what_it_cannot_link() -> None:
    _, notes = convert_roles.Converter(ANCHORS).convert('"""A :func:`helper`."""\n', "mmstream.x")
    assert notes == ["mmstream.x:1: :func:`helper` -> `helper` (not in the reference)"]
