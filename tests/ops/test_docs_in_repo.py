"""The project's documents are its own: no tracked file points at a contract or a notes file outside the repo.

The HTTP contract is docs/API.md (and docs/openapi.json), the dependency notes docs/DEPENDENCIES.md; a clone has
nothing else to read.
"""

import os
import re
import subprocess

import pytest

from conftest import ROOT

# Names of documents that exist outside the repo only. This file names them to look for them, and is skipped.
OUTSIDE = re.compile(r"shared/API\.md|shared/STACK\.md|\bSTACK\.md|\.\./shared/")
THIS_FILE = os.path.relpath(__file__, ROOT)


def tracked_files():
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout, so no list of tracked files: {exc}")
    return [name for name in listed.split("\0") if name]


def test_no_tracked_file_points_outside_the_repo():
    pointers = []
    for name in tracked_files():
        if name == THIS_FILE or not os.path.isfile(os.path.join(ROOT, name)):
            continue
        with open(os.path.join(ROOT, name), encoding="utf-8", errors="replace") as text:
            for number, line in enumerate(text, 1):
                if OUTSIDE.search(line):
                    pointers.append(f"{name}:{number}: {line.strip()}")
    assert not pointers, "\n".join(pointers)


def test_the_documents_pointed_at_instead_are_in_the_repo():
    for name in ("docs/API.md", "docs/openapi.json", "docs/DEPENDENCIES.md"):
        assert os.path.isfile(os.path.join(ROOT, name)), name
    with open(os.path.join(ROOT, "requirements.txt"), encoding="utf-8") as requirements:
        assert "docs/DEPENDENCIES.md" in requirements.readline()
