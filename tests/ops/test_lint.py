"""The code stays as ruff.toml says, lint-clean and formatted (`make lint` runs the same two commands), and keeps the
layers .importlinter states."""

import os
import subprocess
import sys

from conftest import ROOT

RUFF = os.path.join(os.path.dirname(sys.executable), "ruff")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def ruff(*args):
    return subprocess.run([RUFF, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_ruff_finds_nothing_to_complain_about():
    result = ruff("check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_file_is_formatted():
    result = ruff("format", "--check", ".")
    assert result.returncode == 0, f"run `make format`:\n{result.stdout}{result.stderr}"


def test_imports_keep_the_layers():
    """The gateway imports no service package, services import no other service, domain modules and the shared
    rules import no framework, services.common imports no service (.importlinter)."""
    result = subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with open(os.path.join(ROOT, ".importlinter")) as config:
        contracts = config.read().count("[importlinter:contract:")
    assert contracts >= 4 and f"{contracts} kept, 0 broken" in result.stdout, result.stdout
