"""The documentation site: every ```python block of docs/ runs, every pipeline command of its ```bash blocks
parses, and `mkdocs build --strict` succeeds.

The blocks are found and run by the same parser as the README's (tests/test_readme.py): each block on its own, in
a fresh namespace, in a temporary working directory, with torch seeded; a Python-looking fence other than exactly
```python, or an unlabelled one, is an error. The pipeline commands need data and minutes, so they are parsed by
the pipeline's own argument parser rather than run: a renamed flag or dataset fails here. The strict build fails
on any warning: a broken link or anchor, a page missing from the nav, a docstring the API reference cannot render.
"""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from test_readme import CodeBlock, code_blocks, python_blocks, run_block

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
PIPELINE_SCRIPT = ".venv/bin/python examples/skeleton_moco.py"
"""How the pages invoke the pipeline (the environment's interpreter, from the repository root)."""
CUSTOM_DATA_PAGE = DOCS / "data.md"
CUSTOM_DATA_FOLDER = "my_skeletons"
"""The folder the worked example of data.md ("Bring your own data") writes."""


def _block_params() -> list[object]:
    return [
        pytest.param(page, block, id=f"{page.name}:{block.line}") for page in PAGES for block in python_blocks(page)
    ]


def test_docs_have_pages_and_python_blocks() -> None:
    assert (DOCS / "index.md").is_file(), "docs/index.md is missing"
    assert _block_params(), "docs/ has no ```python block: its examples would go untested"


@pytest.mark.parametrize(("page", "block"), _block_params())
def test_docs_block_runs(page: Path, block: CodeBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    run_block(block, str(page))


def _pipeline_commands() -> list[object]:
    commands = []
    for page in PAGES:
        for block in code_blocks(page):
            if block.language != "bash":
                continue
            for offset, line in enumerate(block.code.splitlines(), start=1):
                if line.startswith(PIPELINE_SCRIPT):
                    arguments = shlex.split(line[len(PIPELINE_SCRIPT) :], comments=True)
                    commands.append(pytest.param(arguments, id=f"{page.name}:{block.line + offset}"))
    return commands


def test_docs_show_pipeline_commands() -> None:
    assert _pipeline_commands(), f"no ```bash line of docs/ starts with {PIPELINE_SCRIPT!r}: the check below is void"


@pytest.mark.parametrize("arguments", _pipeline_commands())
def test_docs_pipeline_command_parses(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from skeleton.cli import build_parser

    try:
        parsed = build_parser().parse_args(arguments)
    except SystemExit:
        pytest.fail(f"skeleton_moco.py {shlex.join(arguments)}: {capsys.readouterr().err.strip()}")
    assert isinstance(parsed, argparse.Namespace)


def test_custom_data_example_is_read_by_the_pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The folder data.md's worked example writes loads as `--dataset custom`: both splits, its 4 classes, and
    pre-normalized as it is read (its positions are in camera coordinates, as the page says)."""
    from skeleton.data.datasets import load_dataset

    blocks = [block for block in python_blocks(CUSTOM_DATA_PAGE) if f'"{CUSTOM_DATA_FOLDER}"' in block.code]
    assert len(blocks) == 1, f"expected one block of {CUSTOM_DATA_PAGE.name} writing {CUSTOM_DATA_FOLDER}/"
    monkeypatch.chdir(tmp_path)
    run_block(blocks[0], str(CUSTOM_DATA_PAGE))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*camera coordinates.*")
        train = load_dataset("custom", "train", tmp_path / CUSTOM_DATA_FOLDER)
        val = load_dataset("custom", "val", tmp_path / CUSTOM_DATA_FOLDER)
    assert (len(train), len(val)) == (32, 8)
    assert train.num_classes == val.num_classes == 4
    assert train.prenormalize_on_read and val.prenormalize_on_read
    sample, num_frames, label = train[0]
    assert sample.shape[0] == 3 and sample.shape[2:] == (25, 1)
    assert 20 <= int(num_frames) < 90 and 0 <= label < 4
    # Pre-normalized on read: body 0's spine mid (joint 1) at the origin in frame 0.
    assert float(sample[:, 0, 1, 0].abs().max()) < 1e-5


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed (the docs extra)")
def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "site" / "api" / "index.html").is_file()
