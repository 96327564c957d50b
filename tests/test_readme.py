"""Every ```python block of README.md runs, so the README's examples cannot rot.

Each block runs on its own, in a fresh namespace (as a reader who copies that one block would run it), with
the working directory set to a temporary folder and torch seeded. A block that is deliberately not runnable
(it needs a real dataset, a GPU, several processes) must be fenced as ```bash or ```text; there is no skip
marker. Python-looking fences other than exactly ```python (```py, ```python3, ```pycon, ```python skip) and
unlabelled fences are errors, so no Python code can escape the test by its fence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
PYTHON_LIKE = re.compile(r"^(py|python\d*|pycon|ipython\d*)$")


class CodeBlock(NamedTuple):
    """A fenced code block: its info string's first word, the line of its opening fence, and its text."""

    language: str
    line: int
    code: str


def code_blocks(path: Path) -> list[CodeBlock]:
    """All fenced code blocks of a Markdown file, in order (CommonMark fences of backticks or tildes)."""
    blocks: list[CodeBlock] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent, info = opening["fence"], opening["indent"], opening["info"].strip()
        start = index
        body: list[str] = []
        index += 1
        while index < len(lines):
            closing = FENCE.match(lines[index])
            # A fence closes on the same character, at least as long, with no info string.
            if closing and closing["fence"].startswith(fence) and not closing["info"].strip():
                break
            line = lines[index]
            body.append(line[len(indent) :] if line.startswith(indent) else line)
            index += 1
        else:
            raise ValueError(f"{path.name}:{start + 1}: code block is never closed")
        blocks.append(CodeBlock(info, start + 1, "\n".join(body) + "\n"))
        index += 1
    return blocks


def python_blocks(path: Path) -> list[CodeBlock]:
    """The ```python blocks of ``path``, in order.

    Raises:
        ValueError: for an unlabelled fence, or a Python-like fence other than exactly ``python``: such a block
            would silently not run. Fence non-runnable code as ``bash`` or ``text`` instead.
    """
    selected = []
    for block in code_blocks(path):
        if not block.language:
            raise ValueError(f"{path.name}:{block.line}: unlabelled code fence; label it python, bash or text")
        if block.language != "python" and PYTHON_LIKE.match(block.language.split()[0].lower()):
            raise ValueError(
                f"{path.name}:{block.line}: fence '{block.language}' would not run; use exactly ```python, or "
                "```bash / ```text for a block that is deliberately not runnable"
            )
        if block.language == "python":
            selected.append(block)
    return selected


def run_block(block: CodeBlock, filename: str) -> dict[str, object]:
    """Execute one block in a fresh namespace; tracebacks point at the README's own line numbers."""
    torch.manual_seed(0)
    code = compile("\n" * block.line + block.code, filename, "exec")
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(code, namespace)  # noqa: S102 - running the README's examples is the point of this test
    return namespace


def _readme_params() -> list[object]:
    if not README.exists():
        return []
    return [pytest.param(block, id=f"README.md:{block.line}") for block in python_blocks(README)]


def test_readme_has_python_blocks() -> None:
    assert README.exists(), f"{README} is missing"
    assert python_blocks(README), "README.md has no ```python block: its examples would go untested"


@pytest.mark.parametrize("block", _readme_params())
def test_readme_block_runs(block: CodeBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_block(block, str(README))


# The extractor itself, on temporary READMEs.


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "README.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_extracts_python_blocks_in_order_and_leaves_bash_and_text(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "# Title\n\n```python\nx = 1\n```\n\n```bash\npip install halp-loss\n```\n\n"
        "```text\nnot code\n```\n\n````python\ny = '```'\n````\n\n```bibtex\n@inproceedings{x}\n```\n",
    )
    blocks = python_blocks(path)
    assert [b.code for b in blocks] == ["x = 1\n", "y = '```'\n"]
    assert [b.line for b in blocks] == [3, 15]


def test_no_python_blocks_is_reported(tmp_path: Path) -> None:
    assert python_blocks(write(tmp_path, "# Title\n\n```bash\nls\n```\n")) == []


@pytest.mark.parametrize("fence", ["```", "```py", "```python3", "```pycon", "```python skip", "~~~Python"])
def test_fences_that_would_hide_python_are_rejected(tmp_path: Path, fence: str) -> None:
    closing = "~~~" if fence.startswith("~") else "```"
    with pytest.raises(ValueError, match="README.md:1"):
        python_blocks(write(tmp_path, f"{fence}\nx = 1\n{closing}\n"))


def test_unclosed_block_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="never closed"):
        python_blocks(write(tmp_path, "```python\nx = 1\n"))


def test_failing_block_points_at_its_readme_line(tmp_path: Path) -> None:
    path = write(tmp_path, "Intro\n\n```python\nok = 1\nraise RuntimeError('boom')\n```\n")
    (block,) = python_blocks(path)
    with pytest.raises(RuntimeError, match="boom") as info:
        run_block(block, str(path))
    assert info.traceback[-1].lineno + 1 == 5  # pytest's line numbers are 0-based


def test_blocks_run_in_fresh_namespaces(tmp_path: Path) -> None:
    first, second = python_blocks(write(tmp_path, "```python\nshared = 1\n```\n\n```python\nshared\n```\n"))
    run_block(first, "README.md")
    with pytest.raises(NameError):
        run_block(second, "README.md")
