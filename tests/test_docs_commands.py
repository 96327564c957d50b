"""Every shell command of README.md and docs/ that runs the pipeline is valid as written.

Commands are taken from ```bash blocks (continuation lines joined, shell variables replaced by 1). A command that
calls a bare ``python`` would fail on a fresh machine, where only the virtual environment has torch: the docs
call ``.venv/bin/python``. Each ``examples/skeleton_moco.py`` command must parse, and every command but ``prepare``
must resolve its recipe (``--print-config``), so a renamed flag, dataset or recipe file cannot rot in the docs.
Running them for real needs the datasets; the pipeline tests run the same code on data they write.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from skeleton.cli import build_parser, main
from test_readme import code_blocks

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PIPELINE = "examples/skeleton_moco.py"
VARIABLE = re.compile(r"\$\{?\w+\}?")


def shell_commands(path: Path) -> list[tuple[int, str]]:
    """(line of the block, command) for every command line of the page's ```bash blocks."""
    commands = []
    for block in code_blocks(path):
        if block.language != "bash":
            continue
        text = block.code.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" #", 1)[0].strip()
            for part in re.split(r"&&|;|\bdo\b|\bdone\b", line):
                part = part.strip()
                if part and not part.startswith(("#", "for ", "torchrun")):
                    commands.append((block.line, VARIABLE.sub("1", part)))
    return commands


COMMANDS = [(f"{path.name}:{line}", command) for path in PAGES for line, command in shell_commands(path)]
PIPELINE_COMMANDS = [(where, command) for where, command in COMMANDS if PIPELINE in command]


def test_the_docs_have_pipeline_commands():
    assert len(PIPELINE_COMMANDS) >= 5, PIPELINE_COMMANDS


@pytest.mark.parametrize("where, command", COMMANDS)
def test_no_bare_python(where, command):
    words = shlex.split(command)
    assert "python" not in words, f"{where}: {command!r} runs a bare python; use .venv/bin/python"


@pytest.mark.parametrize("where, command", PIPELINE_COMMANDS)
def test_pipeline_commands_parse_and_resolve(where, command, capsys):
    words = shlex.split(command)
    argv = words[words.index(PIPELINE) + 1 :]
    build_parser().parse_args(argv)  # argparse exits (SystemExit 2) on a flag or value the CLI does not know
    if argv[:1] != ["prepare"]:
        assert main([*argv, "--print-config"]) == 0, f"{where}: {command!r}\n{capsys.readouterr().err}"
