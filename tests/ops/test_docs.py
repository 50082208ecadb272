"""The docs match the code: README's configuration table against the `${VAR:default}` variables of config/*.yml
(and the variables the code reads), README's Layout section against the tree, and no issue numbers in the docs
or in docstrings and comments."""

import fnmatch
import glob
import os
import re
import subprocess

import pytest
from nameko.cli.main import ENV_VAR_MATCHER

from conftest import ROOT

SERVICES = ("accounts", "catalog", "carts", "orders", "payments")
APPS = (*SERVICES, "gateway")
# Words of the default column that mean "no value".
NO_VALUE = {"unset", "none", "empty"}


def readme_section(title):
    """The text of README.md's `## <title>` section, up to the next `## `."""
    with open(os.path.join(ROOT, "README.md")) as readme:
        text = readme.read()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


# --- the configuration table ------------------------------------------------------------------------------------


def config_variables():
    """{variable: {config name: its default}} of every `${VAR:default}` in config/*.yml, comments left out."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "config", "*.yml"))):
        name = os.path.splitext(os.path.basename(path))[0]
        with open(path) as config:
            text = "\n".join(line for line in config if not line.lstrip().startswith("#"))
        for match in ENV_VAR_MATCHER.finditer(text):
            found.setdefault(match.group(1), {})[name] = match.group(2) or ""
    return found


def configuration_table():
    """README's configuration table: [(names, used_by, default)], one per row."""
    rows = []
    for line in readme_section("Configuration").splitlines():
        if not line.startswith("| `"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split(" | ")]
        assert len(cells) == 4, f"a row of the configuration table does not have 4 cells: {line}"
        rows.append((re.findall(r"`([^`]+)`", cells[0]), cells[1], cells[2]))
    assert rows, "README.md has no configuration table"
    return rows


def matches(documented, variable):
    """Whether a name of the table (`HTTP_*_SECONDS`, `<NAME>_FILE` are patterns) covers `variable`."""
    return fnmatch.fnmatchcase(variable, re.sub(r"<[A-Z]+>", "*", documented))


def split_top_level(text):
    """`text` split at the commas that are outside parentheses and backquotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == "`":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and not depth and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def documented_default(part):
    """(value, {app: value}) of one default in the table: its value (a `literal`, a number, or NO_VALUE's words
    as ""), and per-app exceptions named in parentheses ("10 (orders 20, gateway 50)"); None for free text."""
    literal = re.match(r"`([^`]*)`", part)
    word = re.match(r"[^\s(:;,]+", part)
    if literal:
        value = literal.group(1)
    elif word and (word.group(0) in NO_VALUE or re.fullmatch(r"[0-9.]+", word.group(0))):
        value = "" if word.group(0) in NO_VALUE else word.group(0)
    else:
        return None
    exceptions = dict(
        (app, other)
        for group in re.findall(r"\(([^)]*)\)", part)
        for app, other in re.findall(rf"\b({'|'.join(APPS)}) ([0-9.]+)\b", group)
    )
    return value, exceptions


def same_value(documented, configured):
    if documented == "":
        return configured in ("", "null")
    try:
        return float(documented) == float(configured)
    except ValueError:
        return documented == configured


def read_by_code(name):
    """Whether code outside the tests reads environment variable `name`: a Python module that reads the
    environment names it in quotes (not as a config key: `config.get("NAME")`), or a shell script or the Makefile
    says `$NAME` / `${NAME`. `<NAME>_FILE`: a shell script handles the suffix for every name."""
    word = re.escape(name).replace(r"\*", "[A-Z0-9_]*")
    quoted = re.compile(rf"""(?<!config\.get\()(?<!config\[)["']{word}["']""")
    shell = re.compile(rf"\$\{{?{word}\b")
    if "<" in name:
        quoted, shell = None, re.compile(re.escape(re.sub(r"<[A-Z]+>", "", name)) + r"\b")
    files = subprocess.run(
        ["git", "ls-files", "*.py", "*.sh", "Makefile", ":!tests/"], cwd=ROOT, capture_output=True, text=True
    ).stdout.split()
    for path in files:
        with open(os.path.join(ROOT, path), errors="replace") as source:
            text = source.read()
        if path.endswith(".py"):
            if quoted and re.search(r"\benviron\b|\bgetenv\b", text) and quoted.search(text):
                return True
        elif shell.search(text):
            return True
    return False


def test_every_variable_a_config_reads_is_in_the_configuration_table():
    documented = [name for names, _, _ in configuration_table() for name in names]
    missing = [variable for variable in config_variables() if not any(matches(name, variable) for name in documented)]
    assert not missing, f"README's configuration table lacks {missing}"


def test_the_configuration_table_lists_only_variables_a_config_or_the_code_reads():
    configured = config_variables()
    unread = [
        name
        for names, _, _ in configuration_table()
        for name in names
        if not any(matches(name, variable) for variable in configured) and not read_by_code(name)
    ]
    assert not unread, f"README's configuration table lists variables nothing reads: {unread}"


def test_the_configuration_tables_defaults_are_the_configs_defaults():
    configured = config_variables()
    wrong = []
    for names, _, default in configuration_table():
        parts = split_top_level(default)
        if len(parts) != len(names):
            parts = [default] * len(names)  # one default for every name of the row
        for name, part in zip(names, parts, strict=True):
            said = documented_default(part)
            if said is None:
                continue
            value, exceptions = said
            for variable, defaults in configured.items():
                if not matches(name, variable):
                    continue
                for app, actual in defaults.items():
                    expected = exceptions.get(app, value).replace("<service>", app)
                    if not same_value(expected, actual):
                        wrong.append(f"{variable} in config/{app}.yml is {actual!r}, the table says {expected!r}")
    assert not wrong, "\n".join(wrong)


def test_the_configuration_tables_users_are_the_configs_that_read_each_variable():
    configured = config_variables()
    wrong = []
    for names, used_by, _ in configuration_table():
        words = [word.strip() for word in used_by.split(",")]
        if used_by == "all":
            expected = set(APPS)
        elif used_by == "services":
            expected = set(SERVICES)
        elif all(word in APPS for word in words):
            expected = set(words)
        else:
            continue  # said in words ("each service", "`make run`", "tests"...)
        for name in names:
            readers = {app for variable, defaults in configured.items() if matches(name, variable) for app in defaults}
            if readers and readers - {"shell"} != expected:
                wrong.append(f"{name}: read by {sorted(readers - {'shell'})}, the table says {used_by!r}")
    assert not wrong, "\n".join(wrong)


def test_the_table_parser_understands_the_defaults_it_checks():
    assert split_top_level("`0.0.0.0` (`make run`: `127.0.0.1`), 8000") == [
        "`0.0.0.0` (`make run`: `127.0.0.1`)",
        "8000",
    ]
    assert documented_default("10 (orders 20, gateway 50)") == ("10", {"orders": "20", "gateway": "50"})
    assert documented_default("unset: no admin") == ("", {})
    assert documented_default("`null` (none)") == ("null", {})
    assert documented_default("see docs") is None
    assert matches("HTTP_*_SECONDS", "HTTP_KEEPALIVE_SECONDS") and not matches("HTTP_*_SECONDS", "HTTP_PORT")
    assert matches("<NAME>_FILE", "JWT_SECRET_FILE")


# --- the Layout section -----------------------------------------------------------------------------------------


def layout_entries():
    """README's Layout block as {path: description}; an entry starts at the line's first column."""
    section = readme_section("Layout")
    block = section.split("```")[1]
    entries, path = {}, None
    for line in block.strip("\n").splitlines():
        if line and not line[0].isspace():
            path, _, description = line.partition(" ")
            entries[path] = description.strip()
        else:
            entries[path] += " " + line.strip()
    return entries


def named_paths(description):
    """The files and folders a description names: `name.ext` or `name/` (a path may have several parts)."""
    return re.findall(
        r"(?<![\w./-])((?:[\w.-]+/)*(?:[\w-]+\.(?:py|yml|yaml|md|sh|lua|json|toml|ini)|[\w.-]+/))", description
    )


def modules(folder):
    """The modules and packages of `folder` (relative to ROOT), as the Layout names them."""
    found = set()
    for entry in os.listdir(os.path.join(ROOT, folder)):
        full = os.path.join(ROOT, folder, entry)
        if entry.endswith(".py") and entry != "__init__.py":
            found.add(entry)
        elif os.path.isdir(full) and (os.path.exists(os.path.join(full, "__init__.py")) or entry == "migrations"):
            found.add(entry + "/")
    return found


def expand(path):
    return [path.replace("<name>", service) for service in SERVICES] if "<name>" in path else [path]


def test_every_file_and_folder_the_layout_names_exists():
    absent = []
    for path, description in layout_entries().items():
        for folder in expand(path):
            if not os.path.exists(os.path.join(ROOT, folder)):
                absent.append(folder)
            base = folder if folder.endswith("/") else ""
            for named in named_paths(description):
                if not (os.path.exists(os.path.join(ROOT, base, named)) or os.path.exists(os.path.join(ROOT, named))):
                    absent.append(f"{named} (under {path})")
    assert not absent, f"README's Layout names what does not exist: {absent}"


def test_the_layout_names_every_module_of_common_the_gateway_and_each_service():
    entries = {path: set(named_paths(description)) for path, description in layout_entries().items()}
    unnamed = []
    for folder in ("services/common/", "gateway_http/"):
        unnamed += [folder + module for module in sorted(modules(folder) - entries.get(folder, set()))]
    for service in SERVICES:
        folder = f"services/{service}/"
        named = entries.get("services/<name>/", set()) | entries.get(folder, set())
        unnamed += [folder + module for module in sorted(modules(folder) - named)]
    assert not unnamed, f"README's Layout does not name {unnamed}"


def test_the_layout_covers_every_top_level_folder():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    folders = {path.split("/")[0] + "/" for path in tracked if "/" in path and not path.startswith(".")}
    covered = {path.split("/")[0] + "/" for path in layout_entries() if "/" in path}
    covered |= {
        named.split("/")[0] + "/" for description in layout_entries().values() for named in named_paths(description)
    }
    missing = sorted(folders - covered - {"var/"})
    assert not missing, f"README's Layout does not mention {missing}"


# --- issue numbers ----------------------------------------------------------------------------------------------

# "issue 5", "issue #387", "nameko #387", "(#12)": references to trackers the reader may not see. The docs say
# what the code does instead.
ISSUE_NUMBER = re.compile(r"(?i)\bissues? ?#?\d+|\b(?:nameko|werkzeug|eventlet|kombu|sqlalchemy) #\d+|\(#\d+\)")


@pytest.mark.parametrize("kind", ["docs", "code"])
def test_no_issue_numbers(kind):
    patterns = ["*.md"] if kind == "docs" else ["*.py", "*.yml", "*.yaml", "*.sh", "*.ini", "*.toml", "Makefile"]
    tracked = subprocess.run(
        ["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    this_file = os.path.relpath(__file__, ROOT)
    found = []
    for path in tracked:
        if path == this_file:
            continue
        with open(os.path.join(ROOT, path), errors="replace") as text:
            for number, line in enumerate(text, 1):
                if ISSUE_NUMBER.search(line):
                    found.append(f"{path}:{number}: {line.strip()}")
    assert not found, "issue numbers (say what the code does instead):\n" + "\n".join(found)
