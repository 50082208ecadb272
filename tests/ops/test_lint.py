"""The code stays as ruff.toml says: lint-clean and formatted (`make lint` runs the same two commands)."""

import os
import subprocess
import sys

from conftest import ROOT

RUFF = os.path.join(os.path.dirname(sys.executable), "ruff")


def ruff(*args):
    return subprocess.run([RUFF, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_finds_nothing_to_complain_about():
    result = ruff("check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_is_formatted():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, f"run `make format`:\n{result.stdout}{result.stderr}"
