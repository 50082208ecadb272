"""Known vulnerabilities in what the pinned requirements install: pip-audit over the exact versions in this
environment of every package requirements.txt and requirements-dev.txt pull in (the pins and everything they
depend on), against PyPI's vulnerability data (the PyPI JSON API, which also serves pip; OSV is not used,
so no other host must be reachable).

A vulnerability found fails the test; pip-audit unable to reach its data skips it and says why (offline
machines still run the rest of the suite). A vulnerability that does not apply may be ignored only in
IGNORED, with the reason."""

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata

import pytest
from packaging.requirements import Requirement

from tests.ops.test_compose import ROOT

REQUIREMENT_FILES = ["requirements.txt", "requirements-dev.txt"]
# {vulnerability id: why it does not apply here}. Keep it empty unless there is no fixed version to pin.
IGNORED = {}
# pip-audit's words when the vulnerability service (or the network) cannot be used.
UNREACHABLE = re.compile(
    r"ConnectionError|ConnectTimeout|Max retries|Name or service not known|"
    r"Temporary failure in name resolution|Network is unreachable|ServiceError|"
    r"timed out|Connection refused|SSLError",
    re.IGNORECASE,
)


def pinned_requirements(path):
    """The requirements named in `path`, following `-r` includes."""
    found = []
    with open(path) as requirements:
        for line in requirements:
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r"):
                found += pinned_requirements(os.path.join(os.path.dirname(path), line[2:].strip()))
            elif line:
                found.append(Requirement(line))
    return found


def installed_closure(requirements):
    """{distribution name: installed version} of `requirements` and everything they require, as installed."""
    versions, pending = {}, list(requirements)
    while pending:
        requirement = pending.pop()
        name = requirement.name.lower().replace("_", "-")
        if name in versions:
            continue
        try:
            distribution = metadata.distribution(requirement.name)
        except metadata.PackageNotFoundError:
            continue  # an extra's or a platform's dependency that is not installed here
        versions[name] = distribution.version
        for text in distribution.requires or []:
            dependency = Requirement(text)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                pending.append(dependency)
    return versions


def test_every_requirement_is_pinned_and_installed_as_pinned():
    for file_name in REQUIREMENT_FILES:
        for requirement in pinned_requirements(os.path.join(ROOT, file_name)):
            if requirement.name == "setuptools":
                continue  # a ceiling, not a pin: nameko needs pkg_resources (requirements.txt)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{file_name}: {requirement} is not pinned"
            assert metadata.version(requirement.name) == spec.version, f"{requirement} is not what is installed"


def run_pip_audit(pins, folder, service):
    """pip-audit of exactly `pins` ({name: version}) against `service`: (its JSON report or None, stderr)."""
    pip_audit = shutil.which("pip-audit", path=os.path.dirname(sys.executable))
    if pip_audit is None:
        pytest.skip("pip-audit is not installed (make install puts it in .venv from requirements-dev.txt)")
    frozen = folder / "frozen.txt"
    frozen.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    result = subprocess.run(
        [
            pip_audit,
            "--requirement",
            str(frozen),
            "--no-deps",
            "--disable-pip",
            "--vulnerability-service",
            service,
            "--format",
            "json",
            "--progress-spinner",
            "off",
            "--timeout",
            "10",
            "--cache-dir",
            str(folder / f"cache-{service}"),
            *[f"--ignore-vuln={vuln}" for vuln in IGNORED],
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        return json.loads(result.stdout), result.stderr
    except ValueError:
        if UNREACHABLE.search(result.stderr):
            return None, result.stderr.strip().splitlines()[-1][:300]
        raise AssertionError(f"pip-audit failed (exit {result.returncode}): {result.stderr[-2000:]}")


def audit(pins, folder):
    """{name: ["<id> (fixed in ...)"]} for every package in `pins`, from the first vulnerability service
    (PyPI, then OSV) that has data on all of them. Vulnerabilities found by any service are returned at once;
    when no service could audit every package, the test is skipped with what each one said."""
    said = []
    for service in SERVICES:
        report, problem = run_pip_audit(pins, folder, service)
        if report is None:
            said.append(f"{service}: unreachable ({problem})")
            continue
        found = {
            dependency["name"].lower(): [
                f"{vuln['id']} (fixed in {', '.join(vuln['fix_versions']) or 'no release'})"
                for vuln in dependency.get("vulns", [])
            ]
            for dependency in report["dependencies"]
        }
        not_audited = {
            dependency["name"]: dependency["skip_reason"]
            for dependency in report["dependencies"]
            if dependency.get("skip_reason")
        }
        if any(found.values()) or not not_audited:
            return found
        example = next(iter(not_audited.values()))
        said.append(f"{service}: no data for {len(not_audited)} of {len(pins)} packages (e.g. {example})")
    pytest.skip("pip-audit could not check the dependencies, so this says nothing about them: " + "; ".join(said))


# PyPI's JSON API first (the host pip uses anyway), then OSV.
SERVICES = ["pypi", "osv"]


def test_no_known_vulnerabilities_in_the_pinned_dependencies(tmp_path):
    requirements = [r for name in REQUIREMENT_FILES for r in pinned_requirements(os.path.join(ROOT, name))]
    pins = installed_closure(requirements)
    found = audit(pins, tmp_path)
    vulnerable = [f"{name} {pins.get(name, '')}: {vuln}" for name, vulns in sorted(found.items()) for vuln in vulns]
    assert not vulnerable, "known vulnerabilities:\n" + "\n".join(vulnerable)
    assert {"nameko", "werkzeug", "pyjwt", "pytest", "pip-audit"} <= set(found)


def test_the_audit_does_find_a_known_vulnerability(tmp_path):
    # PyJWT 2.3.0 accepted keys that let an attacker pick the algorithm (CVE-2022-29217, fixed in 2.4.0).
    found = audit({"pyjwt": "2.3.0"}, tmp_path)
    assert any("2.4.0" in vuln for vuln in found["pyjwt"]), found
