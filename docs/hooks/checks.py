"""Checks that make the documentation build fail (a mkdocs hook; the docs tests reuse them).

1. No Sphinx role (`:class:`, `:meth:`, `:func:`, `:data:`, `:mod:`, `:attr:`, `:exc:`,
   ...) in the package's sources or in the pages: mkdocstrings shows them as raw text.
   Write cross-references as ``[`Name`][mmstream.module.Name]`` instead
   (`docs/hooks/convert_roles.py` converts a file). Modules listed in
   `PENDING_ROLE_CONVERSION` are not checked yet; the list only shrinks.
2. No `Returns:` item that the Google-style parser reads as a named value: a line
   that starts with `word:` (as "A :class:`X` of ..." does) renders as a row named
   "A". Write the section as one description.
3. Every public name has an entry in the built API reference (`api/index.html`).

`convert_roles.py` builds the site before a conversion, with
`MMSTREAM_DOCS_SKIP_CHECKS=1` in the environment to skip them all.
"""

from __future__ import annotations

import html
import importlib
import inspect
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

#: Modules whose docstrings still hold Sphinx roles, relative to the project root.
#: Convert one with `python docs/hooks/convert_roles.py FILE` and drop it from here;
#: a test fails when a listed module no longer holds a role, so the list only shrinks.
PENDING_ROLE_CONVERSION: tuple[str, ...] = ()

#: The modules whose `__all__` names must each have an entry in the API reference.
PUBLIC_MODULES: tuple[str, ...] = (
    "mmstream",
    "mmstream.errors",
    "mmstream.middleware",
    "mmstream.pipeline",
    "mmstream.providers",
    "mmstream.serde",
    "mmstream.testing",
)

_ROLES = "class|meth|func|data|mod|attr|exc|obj|const"
#: A Sphinx role in source text: ``:class:`~mmstream.X` ``, ``:py:meth:`Title <x.y>` ``.
SPHINX_ROLE = re.compile(rf":(?:py:)?(?P<role>{_ROLES}):`(?P<target>[^`\n]+)`")
#: The same role as it shows in built HTML (the backticks became ``<code>``).
_HTML_ROLE = re.compile(rf":(?:py:)?(?P<role>{_ROLES}):<code>(?P<target>[^<]*)</code>")
_SKIP_CHECKS = "MMSTREAM_DOCS_SKIP_CHECKS"
_ANCHOR = re.compile(r'id="(mmstream(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"')


# --- 1. Sphinx roles ---------------------------------------------------------------------


def checked_files(root: Path) -> list[Path]:
    """The files the role check reads: the package (minus pending modules) and the pages."""
    pending = {root / name for name in PENDING_ROLE_CONVERSION}
    sources = [p for p in sorted((root / "mmstream").rglob("*.py")) if p not in pending]
    pages = sorted((root / "docs").rglob("*.md"))
    readme = root / "README.md"
    return sources + pages + ([readme] if readme.is_file() else [])


def find_roles(text: str) -> Iterator[tuple[int, str]]:
    """Each Sphinx role in ``text``: its line number (1-based) and the role as written."""
    for match in SPHINX_ROLE.finditer(text):
        yield text.count("\n", 0, match.start()) + 1, match.group(0)


def role_findings(root: Path, files: Iterable[Path] | None = None) -> list[str]:
    """``path:line: role`` for every Sphinx role in the checked files."""
    found = []
    for path in checked_files(root) if files is None else files:
        for line, role in find_roles(path.read_text(encoding="utf-8")):
            found.append(f"{path.relative_to(root).as_posix()}:{line}: {role}")
    return found


def pending_roles(root: Path) -> set[tuple[str, str]]:
    """(role, target) of every role still in a pending module, which the HTML may show."""
    found = set()
    for name in PENDING_ROLE_CONVERSION:
        path = root / name
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            found.update((m["role"], m["target"]) for m in SPHINX_ROLE.finditer(text))
    return found


def html_role_findings(page: str, allowed: set[tuple[str, str]]) -> list[str]:
    """Raw roles in one built page, except those a pending module still holds."""
    return [
        match.group(0)
        for match in _HTML_ROLE.finditer(page)
        if (match["role"], html.unescape(match["target"])) not in allowed
    ]


# --- 2. Returns sections that split into a named row -------------------------------------


def named_returns(root: Path) -> list[str]:
    """``object: first line`` for every Returns item parsed as a named value."""
    import griffe

    pending = {root / name for name in PENDING_ROLE_CONVERSION}
    package = griffe.load(
        "mmstream",
        search_paths=[str(root)],
        docstring_parser=griffe.Parser.google,
        allow_inspection=False,
        resolve_aliases=False,
    )
    found = []
    for obj in _walk(package):
        if obj.docstring is None or obj.filepath in pending:
            continue
        for section in obj.docstring.parse(warnings=False):
            if section.kind is griffe.DocstringSectionKind.returns:
                found.extend(
                    f"{obj.path}: Returns item named {item.name!r}"
                    for item in section.value
                    if item.name
                )
    return found


def _walk(obj: Any) -> Iterator[Any]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _walk(member)


# --- 3. Public names in the API reference ------------------------------------------------


def public_names() -> list[tuple[str, str]]:
    """(module, name) for every name in the public modules' `__all__` (dunders aside)."""
    names = []
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names.extend((module_name, name) for name in module.__all__ if not name.startswith("_"))
    return names


def reference_ids(page: str) -> set[str]:
    """The anchors of documented objects on a built page (``mmstream.errors.APIError``...)."""
    return set(_ANCHOR.findall(page))


def _resolve(identifier: str) -> Any:
    """The object an anchor names, or ``None``."""
    parts = identifier.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for part in parts[cut:]:
            try:
                obj = (
                    inspect.getattr_static(obj, part)
                    if inspect.isclass(obj)
                    else getattr(obj, part)
                )
            except AttributeError:
                return None
        return obj
    return None


def _has_identity(value: object) -> bool:
    return inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value)


def missing_from_reference(ids: set[str]) -> list[str]:
    """Public names (and the public methods of top-level classes) without an entry."""
    documented: dict[int, list[str]] = {}
    for identifier in ids:
        obj = _resolve(identifier)
        if obj is not None and _has_identity(obj):
            documented.setdefault(id(obj), []).append(identifier)
    missing = []
    for module_name, name in public_names():
        value = getattr(importlib.import_module(module_name), name)
        anchors = {f"{module_name}.{name}", f"mmstream.{name}"} & ids
        if not anchors and _has_identity(value):
            anchors = set(documented.get(id(value), ()))
        if not anchors:
            missing.append(f"{module_name}.{name}")
            continue
        if module_name == "mmstream" and inspect.isclass(value):
            missing.extend(_missing_members(value, anchors, ids))
    return missing


def _missing_members(cls: type, anchors: set[str], ids: set[str]) -> list[str]:
    """Public methods and properties a class defines that none of its entries lists.

    An alias (``run_component = run``) counts as listed when what it names is.
    """
    members = {
        member: value
        for member, value in vars(cls).items()
        if not member.startswith("_")
        and (inspect.isroutine(value) or isinstance(value, (property, classmethod, staticmethod)))
    }
    listed = {
        member for member in members if any(f"{anchor}.{member}" in ids for anchor in anchors)
    }
    listed_values = {id(members[member]) for member in listed}
    return [
        f"{min(anchors)}.{member}"
        for member, value in members.items()
        if member not in listed and id(value) not in listed_values
    ]


# --- the mkdocs hook -----------------------------------------------------------------------


def _root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_pre_build(config: Any, **kwargs: Any) -> None:
    """Fail before building on a leftover Sphinx role or a Returns item read as a name."""
    from mkdocs.exceptions import PluginError

    if os.environ.get(_SKIP_CHECKS):
        return
    root = _root(config)
    problems = role_findings(root)
    if problems:
        raise PluginError(
            "Sphinx roles render as raw text; write [`Name`][mmstream.module.Name] "
            "(python docs/hooks/convert_roles.py FILE converts a file):\n  " + "\n  ".join(problems)
        )
    problems = named_returns(root)
    if problems:
        raise PluginError(
            "a Returns line that starts with 'word:' renders as a row named 'word'; "
            "write the section as one description:\n  " + "\n  ".join(problems)
        )


def on_post_build(config: Any, **kwargs: Any) -> None:
    """Fail when a public name is missing from the API reference or a page shows a raw role."""
    from mkdocs.exceptions import PluginError

    if os.environ.get(_SKIP_CHECKS):
        return
    site = Path(config.site_dir)
    reference = site / "api" / "index.html"
    if not reference.is_file():
        raise PluginError(f"the API reference was not built ({reference} is missing)")
    missing = missing_from_reference(reference_ids(reference.read_text(encoding="utf-8")))
    if missing:
        raise PluginError(
            "public names missing from the API reference (docs/api.md):\n  " + "\n  ".join(missing)
        )
    allowed = pending_roles(_root(config))
    shown = []
    for page in sorted(site.rglob("*.html")):
        for role in html_role_findings(page.read_text(encoding="utf-8"), allowed):
            shown.append(f"{page.relative_to(site).as_posix()}: {role}")
    if shown:
        raise PluginError("raw Sphinx roles in the built pages:\n  " + "\n  ".join(shown))
