"""Every ```python block in docs/**/*.md and README.md runs, so the documentation cannot rot.

The convention (also in docs/testing.md, "Examples in the documentation"):

- Each fenced block whose language is ``python`` (or ``py``) runs. Other
  languages (``bash``, ``text``, ``pycon``, ...) are never run.
- ``<!-- no-run -->`` on the line before the fence (blank lines between are
  allowed) skips the block: use it for examples that need a real provider, a
  key, or names the page does not define.
- The blocks of one page run in order in one namespace, like a notebook, so a
  later block may use what an earlier one defined.
- A page with a top-level ``await`` in any block runs on asyncio and on trio:
  its ``await`` blocks run on the test's event loop, its other blocks in a
  worker thread (as a script would, so ``asyncio.run(...)`` and blocking calls
  work there). A page without one runs once, as a plain script.
- The current directory is a fresh temporary one holding sample images
  (`SAMPLE_IMAGES`, plus ``docs/assets/``); provider API keys are
  removed from the environment, so an example that would reach a real API
  fails instead.
- The pages a newcomer reads first (`CHECKOUT_PAGES`: the README, the home
  page, the quickstart) get only what a checkout has, ``docs/assets/``: their
  examples must use the shipped picture or images they make.
"""

from __future__ import annotations

import ast
import inspect
import re
import shutil
from pathlib import Path
from typing import Any

import anyio.to_thread
import attrs
import pytest
from PIL import Image

import mmstream as mm

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Files every example finds in its working directory: name → (size, RGB colour).
SAMPLE_IMAGES: dict[str, tuple[tuple[int, int], tuple[int, int, int]]] = {
    "cat.png": ((96, 64), (245, 140, 20)),
    "cat.jpg": ((96, 64), (245, 140, 20)),
    "dog.png": ((64, 96), (130, 80, 40)),
    "dog.jpg": ((64, 96), (130, 80, 40)),
    "a.png": ((32, 32), (220, 30, 30)),
    "b.png": ((32, 32), (40, 70, 210)),
    "image.png": ((48, 48), (40, 170, 60)),
    "photo.jpg": ((120, 80), (40, 200, 220)),
    "chart.png": ((80, 60), (255, 255, 255)),
    "receipt.jpg": ((60, 120), (240, 240, 230)),
}

#: Pages whose examples run with nothing but the checkout's files (no SAMPLE_IMAGES).
CHECKOUT_PAGES = frozenset({"README.md", "docs/index.md", "docs/quickstart.md"})

#: Environment variables that would let an example reach a real provider.
API_KEYS = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "AZURE_OPENAI_API_KEY",
    "AZURE_OPENAI_AD_TOKEN",
    "AZURE_OPENAI_ENDPOINT",
    "OPENAI_COMPATIBLE_API_KEY",
    "OPENAI_COMPATIBLE_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "OLLAMA_API_KEY",
    "OLLAMA_HOST",
)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*)$")
_NO_RUN = "<!-- no-run -->"
_PYTHON = {"python", "py", "python3"}


@attrs.frozen
class Block:
    """One runnable code block: where it is and its source."""

    page: str
    line: int  # the first line of code, 1-based
    source: str

    def compile(self) -> Any:
        """Compile with the line numbers of the page, allowing top-level ``await``."""
        padded = "\n" * (self.line - 1) + self.source
        return compile(padded, f"{self.page}", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)

    @property
    def is_async(self) -> bool:
        return bool(self.compile().co_flags & inspect.CO_COROUTINE)


def extract_blocks(text: str, page: str) -> list[Block]:
    """The runnable blocks of a Markdown page, in order."""
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if match is None:
            index += 1
            continue
        fence, indent = match["fence"], match["indent"]
        info = match["info"].strip()
        language = info.split()[0].strip("{}.") if info else ""
        end = index + 1
        while end < len(lines):
            closing = lines[end].strip()
            if closing.startswith(fence[0] * len(fence)) and not closing.strip(fence[0]):
                break
            end += 1
        body = [
            line[len(indent) :] if line.startswith(indent) else line.lstrip()
            for line in lines[index + 1 : end]
        ]
        if language in _PYTHON and not _skipped(lines, index):
            blocks.append(Block(page=page, line=index + 2, source="\n".join(body) + "\n"))
        index = end + 1
    return blocks


def _skipped(lines: list[str], fence_index: int) -> bool:
    """Whether ``<!-- no-run -->`` stands before the fence (blank lines allowed)."""
    before = fence_index - 1
    while before >= 0 and not lines[before].strip():
        before -= 1
    return before >= 0 and lines[before].strip() == _NO_RUN


def pages() -> list[Path]:
    found = sorted(DOCS.rglob("*.md")) if DOCS.is_dir() else []
    readme = ROOT / "README.md"
    if readme.is_file():
        found.append(readme)
    return found


def page_blocks() -> dict[str, list[Block]]:
    result: dict[str, list[Block]] = {}
    for path in pages():
        name = path.relative_to(ROOT).as_posix()
        blocks = extract_blocks(path.read_text(encoding="utf-8"), name)
        if blocks:
            result[name] = blocks
    return result


PAGES = page_blocks()
SYNC_PAGES = sorted(name for name, blocks in PAGES.items() if not any(b.is_async for b in blocks))
ASYNC_PAGES = sorted(name for name, blocks in PAGES.items() if any(b.is_async for b in blocks))


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory with the sample images, and no API keys."""
    for name, (size, colour) in SAMPLE_IMAGES.items():
        Image.new("RGB", size, colour).save(tmp_path / name)
    assets = DOCS / "assets"
    if assets.is_dir():
        shutil.copytree(assets, tmp_path / "docs" / "assets")
    for key in API_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _as_in_a_checkout(page: str, workdir: Path) -> None:
    """Leave only ``docs/assets/`` for the pages a newcomer runs from a fresh checkout."""
    if page in CHECKOUT_PAGES:
        for name in SAMPLE_IMAGES:
            (workdir / name).unlink()


def _namespace() -> dict[str, Any]:
    return {"__name__": "__main__", "__builtins__": __builtins__}


def _open_llms(namespace: dict[str, Any]) -> list[mm.MultiModalLLM]:
    return [value for value in namespace.values() if isinstance(value, mm.MultiModalLLM)]


@pytest.mark.parametrize("page", SYNC_PAGES)
def test_page_runs(page: str, workdir: Path) -> None:
    """A page of plain examples runs top to bottom like a script."""
    _as_in_a_checkout(page, workdir)
    namespace = _namespace()
    try:
        for block in PAGES[page]:
            exec(block.compile(), namespace)
    finally:
        for llm in _open_llms(namespace):
            llm.close()


@pytest.mark.parametrize("page", ASYNC_PAGES)
async def test_async_page_runs(page: str, workdir: Path) -> None:
    """A page with top-level ``await`` runs on the test's event loop (asyncio and trio)."""
    _as_in_a_checkout(page, workdir)
    namespace = _namespace()
    try:
        for block in PAGES[page]:
            code = block.compile()
            if code.co_flags & inspect.CO_COROUTINE:
                await eval(code, namespace)
            else:
                await anyio.to_thread.run_sync(exec, code, namespace)
    finally:
        for llm in _open_llms(namespace):
            await llm.aclose()
            await anyio.to_thread.run_sync(llm.close)


# --- the extractor itself ----------------------------------------------------------------


def test_extractor_follows_the_convention() -> None:
    text = "\n".join(
        [
            "# Title",
            "```python",
            "x = 1",
            "```",
            "<!-- no-run -->",
            "",
            "```python",
            "raise SystemExit('skipped')",
            "```",
            "```bash",
            "echo not python",
            "```",
            "- a list item:",
            "",
            "    ```py",
            "    if x:",
            "        y = await z()",
            "    ```",
            "````python",
            "s = '''",
            "```",
            "'''",
            "````",
        ]
    )
    blocks = extract_blocks(text, "page.md")
    assert [b.source for b in blocks] == [
        "x = 1\n",
        "if x:\n    y = await z()\n",
        "s = '''\n```\n'''\n",
    ]
    assert [b.line for b in blocks] == [3, 16, 20]
    assert [b.is_async for b in blocks] == [False, True, False]


def test_tracebacks_point_at_the_page() -> None:
    (block,) = extract_blocks("intro\n\n```python\nx = 1\n1 / 0\n```\n", "docs/x.md")
    with pytest.raises(ZeroDivisionError) as info:
        exec(block.compile(), _namespace())
    frame = info.traceback[-1]
    assert (str(frame.path), frame.lineno + 1) == ("docs/x.md", 5)


def test_pages_are_found() -> None:
    """The test really collects the documentation (an empty list would pass vacuously)."""
    assert "README.md" in PAGES
    assert len(PAGES) >= 3


def test_checkout_pages_have_examples() -> None:
    """The pages run as in a checkout really are collected."""
    assert set(PAGES) >= CHECKOUT_PAGES


# --- the README's commands --------------------------------------------------------------


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def test_readme_commands_make_a_venv_and_match_ci() -> None:
    """The two "Try it" commands work on a system Python that refuses pip, as CI runs them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    try_it = readme.split("## Try it", 1)[1].split("\n## ", 1)[0]
    demo, tests = (block.strip() for block in _bash_blocks(try_it))
    for command in (demo, tests):
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install")
        assert "\n" not in command  # one line to paste
    assert demo.endswith(
        '.venv/bin/mmstream complete "What is in this picture?" --image docs/assets/sample.png'
    )
    assert (ROOT / "docs" / "assets" / "sample.png").is_file()
    extras = re.search(r"pip install -q -e '\.\[([\w,]+)\]'", tests)
    assert extras is not None and tests.endswith(".venv/bin/python -m pytest -q")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 -m venv .venv" in ci
    assert f"-e '.[{extras.group(1)}]'" in ci  # the same extras
    assert re.search(r"^python -m pytest -q$", ci, flags=re.MULTILINE)  # the same command
