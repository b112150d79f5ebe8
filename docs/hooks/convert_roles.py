"""Rewrite Sphinx roles as mkdocstrings cross-references, one file at a time.

Usage, from the project root: ``python docs/hooks/convert_roles.py [--dry-run] FILE...``.

The transform, applied to the whole text of each file (docstrings and any other string):

1. Find ``:ROLE:`TARGET` `` with ROLE one of class, meth, func, data, mod, attr, exc,
   obj, const (an optional ``py:`` prefix too). TARGET may be ``Title <target>``.
2. The text shown: the title when given; else, for ``~a.b.C``, the last part ``C``;
   else the target exactly as written (no ``()`` added to functions).
3. The identifier, tried in order until one names an entry of the API reference
   (the anchors of the built site):
   a. a target starting with ``mmstream.``: itself;
   b. otherwise (a leading ``.`` is dropped): ``<class>.<target>`` for each class
      around the role's line, innermost first; then ``<module>.<target>``; then
      ``mmstream.<target>``; then the target itself (``attrs.evolve``);
   c. a candidate that is not an anchor but imports to an object that some anchor
      also names takes that anchor, the shortest first.
   An identifier the inventory lists under another entry (``mmstream._secret.Secret``,
   a re-export) becomes that entry's anchor (``mmstream.Secret``).
4. The result: `` [`TEXT`][IDENTIFIER] ``; with no identifier, plain code `` `TEXT` ``
   (the target is not in the reference: a private name or another project's), and
   the file and line are printed so they can be checked.
5. A docstring line the rewrite made longer than 100 characters is wrapped at the
   last space that is outside backticks and brackets and does not start the next
   line with Markdown syntax (``-``, ``*``, ``+``, ``#``, ``>``, ``|``, ``1.``). The
   continuation keeps the line's indentation, plus 4 for an ``name: text`` item
   (Args, Raises, ...) and 2 for a ``- `` list item. A long line outside a
   docstring (a comment, a string) is printed, to wrap by hand.

Run it from the project root. It builds the site once (without the role check) to
learn the anchors; ``--dry-run`` prints the changes instead of writing them.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checks import SPHINX_ROLE

_TITLED = re.compile(r"^(?P<title>.*?)\s*<(?P<target>[^<>]+)>$")


def inventory_anchors(path: Path) -> dict[str, str]:
    """Each identifier in a site's ``objects.inv`` → the anchor of its entry.

    A re-export or an import (``mmstream._secret.Secret``, ``mmstream.serde.Secret``)
    is listed with the anchor of the entry it names (``mmstream.Secret``).
    """
    lines = path.read_bytes().split(b"\n", 4)  # four header lines, then zlib (version 2)
    anchors = {}
    for line in zlib.decompress(lines[4]).decode("utf-8").splitlines():
        name, _domain, _priority, uri, _shown = line.split(" ", 4)
        fragment = uri.partition("#")[2]
        anchors[name] = name if fragment in ("", "$") else fragment
    return anchors


def build_anchors(root: Path) -> dict[str, str]:
    """Build the site into a temporary directory and return its anchors."""
    with tempfile.TemporaryDirectory() as site:
        env = {**os.environ, "MMSTREAM_DOCS_SKIP_CHECKS": "1", "NO_MKDOCS_2_WARNING": "1"}
        subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--quiet", "--site-dir", site],
            cwd=root,
            env=env,
            check=True,
        )
        return inventory_anchors(Path(site) / "objects.inv")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.resolve().relative_to(root.resolve()).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _classes_by_line(text: str, module: str) -> list[tuple[int, int, str]]:
    """(first line, last line, dotted path) of every class in the module."""
    found: list[tuple[int, int, str]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                path = f"{prefix}.{child.name}"
                found.append((child.lineno, child.end_lineno or child.lineno, path))
                visit(child, path)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, prefix)

    visit(ast.parse(text), module)
    return found


def _resolve(identifier: str) -> Any:
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


WIDTH = 100
_ITEM = re.compile(r"^[\w*]+(?: \([^)]*\))?: ")
_MARKDOWN_START = re.compile(r"^(?:[-*+#>|]|\d+\.)(?:\s|$)")


def _docstring_lines(text: str) -> set[int]:
    """The line numbers (1-based) that belong to a docstring."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                lines.update(range(body[0].lineno, (body[0].end_lineno or body[0].lineno) + 1))
    return lines


def _break_points(line: str) -> list[int]:
    """Positions of spaces outside backticks and brackets, where a line may be broken."""
    points, ticks, depth = [], 0, 0
    for index, char in enumerate(line):
        if char == "`":
            ticks += 1
        elif ticks % 2 == 0 and char == "[":
            depth += 1
        elif ticks % 2 == 0 and char == "]":
            depth = max(0, depth - 1)
        elif char == " " and ticks % 2 == 0 and depth == 0:
            points.append(index)
    return points


def wrap(line: str, width: int = WIDTH) -> list[str]:
    """One long docstring line as several, by rule 5 of the module docstring."""
    indent = line[: len(line) - len(line.lstrip())]
    body = line.strip().removeprefix('"""')
    extra = 4 if _ITEM.match(body) else 2 if body.startswith("- ") else 0
    result, rest, prefix = [], line, indent + " " * extra
    while len(rest) > width:
        start = len(rest) - len(rest.lstrip())
        candidates = [
            point
            for point in _break_points(rest)
            if start < point <= width and not _MARKDOWN_START.match(rest[point + 1 :])
        ]
        if not candidates:
            break
        cut = candidates[-1]
        result.append(rest[:cut].rstrip())
        rest = prefix + rest[cut + 1 :].lstrip()
    return [*result, rest]


class Converter:
    """The transform of one project: its anchors, and which object each anchor names."""

    def __init__(self, anchors: Mapping[str, str]) -> None:
        self.anchors = dict(anchors)
        self._by_object: dict[int, str] = {}
        for anchor in sorted(set(self.anchors.values()), key=lambda a: (len(a), a)):
            obj = _resolve(anchor)
            if obj is not None and (inspect.isclass(obj) or inspect.isroutine(obj)):
                self._by_object.setdefault(id(obj), anchor)

    def identifier(self, target: str, module: str, classes: Sequence[str]) -> str | None:
        """The anchor a role's target names, by rule 3 of the module docstring."""
        if target.startswith("mmstream."):
            candidates = [target]
        else:
            name = target.lstrip(".")
            candidates = [f"{cls}.{name}" for cls in classes]
            candidates += [f"{module}.{name}", f"mmstream.{name}", name]
        for candidate in candidates:
            if candidate in self.anchors:
                return self.anchors[candidate]
        for candidate in candidates:
            obj = _resolve(candidate)
            if obj is not None and id(obj) in self._by_object:
                return self._by_object[id(obj)]
        return None

    def convert(self, text: str, module: str) -> tuple[str, list[str]]:
        """The text with every role rewritten, and a note for each one left unlinked."""
        spans = _classes_by_line(text, module)
        notes: list[str] = []

        def replace(match: re.Match[str]) -> str:
            line = text.count("\n", 0, match.start()) + 1
            raw = match["target"].strip()
            titled = _TITLED.match(raw)
            title, target = (titled["title"], titled["target"]) if titled else (None, raw)
            short = target.startswith("~")
            target = target.lstrip("~").removesuffix("()")
            shown = title or (target.rsplit(".", 1)[-1] if short else target)
            around = [path for first, last, path in reversed(spans) if first <= line <= last]
            identifier = self.identifier(target, module, around)
            if identifier is None:
                notes.append(
                    f"{module}:{line}: {match.group(0)} -> `{shown}` (not in the reference)"
                )
                return f"`{shown}`"
            return f"[`{shown}`][{identifier}]"

        new = SPHINX_ROLE.sub(replace, text)
        docstrings = _docstring_lines(text)
        old_lines, out = text.split("\n"), []
        for number, (old, line) in enumerate(zip(old_lines, new.split("\n"), strict=True), start=1):
            if line == old or len(line) <= WIDTH:
                out.append(line)
            elif number in docstrings:
                out.extend(wrap(line))
            else:
                notes.append(f"{module}:{number}: longer than {WIDTH} characters; wrap it by hand")
                out.append(line)
        return "\n".join(out), notes


def main(argv: Sequence[str] | None = None) -> int:
    """Convert the files named on the command line; print what stayed unlinked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--dry-run", action="store_true", help="print, do not write")
    args = parser.parse_args(argv)
    root = Path.cwd()
    converter = Converter(build_anchors(root))
    for path in args.files:
        text = path.read_text(encoding="utf-8")
        new, notes = converter.convert(text, _module_name(path, root))
        for note in notes:
            print(note)
        if new != text:
            if args.dry_run:
                for old_line, new_line in zip(text.splitlines(), new.splitlines(), strict=False):
                    if old_line != new_line:
                        print(f"{path}:\n  - {old_line.strip()}\n  + {new_line.strip()}")
            else:
                path.write_text(new, encoding="utf-8")
                print(f"converted {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
