"""Every service is laid out the same way (docs/SERVICES.md, "Layout of a service"): rules in domain.py, SQL in
store.py, entrypoints that only orchestrate in service.py, and one commit rule (services/common/db.py)."""

import ast
import os

import pytest

from conftest import ROOT

SERVICES = ("accounts", "carts", "catalog", "orders", "payments")


def source(*path):
    with open(os.path.join(ROOT, "services", *path)) as module:
        return ast.parse(module.read())


def modules(name):
    """Every module of service `name` but its migrations."""
    folder = os.path.join(ROOT, "services", name)
    return sorted(file for file in os.listdir(folder) if file.endswith(".py"))


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_has_service_domain_store_models_and_migrations(name):
    folder = os.path.join(ROOT, "services", name)
    for part in ("service.py", "domain.py", "store.py", "models.py", "migrations/env.py"):
        assert os.path.exists(os.path.join(folder, part)), f"services/{name}/{part} is missing"


@pytest.mark.parametrize("name", SERVICES)
def test_service_py_builds_no_sql(name):
    """service.py takes nothing from SQLAlchemy but its exceptions, and uses the session only to hand it to
    store.py (or to roll back and start again after a lost race)."""
    tree = source(name, "service.py")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
            assert node.module == "sqlalchemy.exc", f"services/{name}/service.py imports {node.module}"
        if isinstance(node, ast.Import):
            assert not any(alias.name.startswith("sqlalchemy") for alias in node.names)
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
            and node.value.attr == "db"
        ):
            assert node.attr == "rollback", f"services/{name}/service.py calls self.db.{node.attr} (line {node.lineno})"


@pytest.mark.parametrize("name", SERVICES)
def test_nothing_in_a_service_calls_commit(name):
    """The commit rule: Database commits the entrypoint's transaction; a saga step or a sweep's item says
    commit_step (services/common/db.py). No module of a service calls `.commit()` itself."""
    for module in modules(name):
        for node in ast.walk(source(name, module)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                assert node.func.attr != "commit", f"services/{name}/{module}:{node.lineno} calls .commit()"
