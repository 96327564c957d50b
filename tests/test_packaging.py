"""The wheel holds the halp_loss package with its type marker and nothing of the examples, tests or benchmarks."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("halp_loss-*.whl")
    return wheel


def test_wheel_contents(tmp_path: Path) -> None:
    wheel = zipfile.ZipFile(build_wheel(tmp_path))
    names = wheel.namelist()
    package = {n for n in names if n.startswith("halp_loss/")}
    assert {"halp_loss/__init__.py", "halp_loss/py.typed", "halp_loss/loss.py"} <= package
    assert not [n for n in names if n.split("/")[0] in {"examples", "tests", "benchmarks", "skeleton", "docs"}]
    metadata = next(n for n in names if n.endswith("METADATA"))
    text = wheel.read(metadata).decode()
    assert "Name: halp-loss" in text and "Requires-Dist: torch>=2.2" in text and "Requires-Dist: einops" in text


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0", str(wheel)], check=True)
    code = "import halp_loss, torch; print(halp_loss.HaLPInfoNCE()(torch.randn(4, 8), torch.randn(4, 8)).item())"
    subprocess.run([str(venv / "bin" / "python"), "-c", code], check=True, cwd=tmp_path)
