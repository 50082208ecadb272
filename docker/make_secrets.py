"""`python docker/make_secrets.py [--rotate NAME]... [--drop-previous-jwt] [DIR]`: the containers' secrets.

docker-compose.yml runs this as the one-shot service `secrets` (the app image, as root) before any other
container starts; docs/CONTAINERS.md is the operator's guide. Under DIR (default /run/cartmesh), each
directory is its own volume in compose, mounted only where it is named:

    raw/        the values everything else is made from: JWT_SECRET, RABBITMQ_PASSWORD (the operators' broker
                user), POSTGRES_PASSWORD, each <NAME>_DB_PASSWORD, each <APP>_BROKER_PASSWORD (every app's
                own broker user) and GRAFANA_ADMIN_PASSWORD; and JWT_PREVIOUS_SECRETS, the retired token keys
                (not random: a rotated JWT_SECRET is kept there until `--drop-previous-jwt`). Only this
                service mounts it.
    <app>/      one per app container (each service and the gateway): AMQP_URI (as the app's own broker user)
                and, for a service, its own <NAME>_DATABASE_URL, full values with the passwords in them;
                JWT_SECRET for accounts and the gateway only, and JWT_PREVIOUS_SECRETS while there are any for
                the gateway (it verifies tokens; accounts only signs them);
                RABBITMQ_API_URI (the broker's management API, for GET /services) and REDIS_URL (the
                rate-limit counters) for the gateway only.
                docker/entrypoint.sh exports them as environment variables.
    postgres/   POSTGRES_PASSWORD and each <NAME>_DB_PASSWORD (read by docker/postgres-init.sh).
    rabbitmq/   RABBITMQ_DEFAULT_PASS, and definitions.json: the broker's users (salted SHA-256 hashes, never
                a password) and each app user's permissions (docker/broker_permissions.py), which RabbitMQ
                loads at every boot (docker/rabbitmq.conf).
    grafana/    GF_SECURITY_ADMIN_PASSWORD (Grafana reads it through GF_SECURITY_ADMIN_PASSWORD__FILE).

A raw value is made once and then kept: PostgreSQL, RabbitMQ and Grafana fix their passwords when their data
is first made, so a new value would lock the services out. A raw value given in this process's environment
(compose passes the host's variables, or the repo's .env, through) wins: it is stored when it differs, which
is how an operator brings their own. `--rotate NAME` replaces one stored value by a new random one (see
docs/CONTAINERS.md for what else must follow). Every other file is derived from raw/ on every run, so it is
rewritten when it differs and removed when no longer wanted: each app directory holds exactly what its
container needs.

One file per value, without a trailing newline; directories 0700 and files 0600, owned by the uid that reads
them: 10001 (the app image's user) for app directories, 999 (the postgres user of the official Debian-based
postgres image, which runs the init scripts) for postgres/, 472 (the grafana user of the official grafana
image) for grafana/, 999 (the rabbitmq user of the official rabbitmq image, which loads definitions.json) for
rabbitmq/, root for raw/. Ownership is only set when this runs as root. Standard library
only.
"""

import argparse
import base64
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import sys
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.run import GATEWAY, SERVICES, database_url_variable  # noqa: E402 -- the one list of services


def _load_sibling(name):
    """docker/<name>.py as a module: docker/ is no package (`import docker` could find docker-py)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "docker", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


broker_permissions = _load_sibling("broker_permissions")

DEFAULT_DIR = "/run/cartmesh"
RAW = "raw"
# Host names are the compose service names. BROKER_USER is the operators' (administrator) broker user; every
# app connects as its own user, named after it, with only its permissions.
BROKER_HOST, BROKER_USER = "rabbitmq", "cartmesh"
BROKER_API_PORT = 15672  # the management plugin of the rabbitmq:3-management image
DATABASE_HOST = "postgres"
REDIS_URL = "redis://redis:6379/0"  # compose's `redis`: no host port, reached only on the compose network
JWT_HOLDERS = ("accounts", GATEWAY)  # who issues tokens and who verifies them; nobody else gets the secret
APP_UID, POSTGRES_UID, GRAFANA_UID, RABBITMQ_UID = 10001, 999, 472, 999
OWNERS = {RAW: 0, "rabbitmq": RABBITMQ_UID, "postgres": POSTGRES_UID, "grafana": GRAFANA_UID}  # others: APP_UID
PREVIOUS_JWT = "JWT_PREVIOUS_SECRETS"  # raw/, not random: the retired JWT_SECRET values, newest first
DEFINITIONS = "definitions.json"
BROKER_MANAGEMENT_APP = GATEWAY  # reads queue depths through the management API: its user is tagged for it


class SecretsError(Exception):
    """A value or an option that cannot be used; nothing was written."""


def db_password_variable(service):
    return f"{service.upper()}_DB_PASSWORD"


def broker_password_variable(app):
    return f"{app.upper()}_BROKER_PASSWORD"


def raw_names():
    """The names of the raw values, in the order they are made."""
    return (
        ["JWT_SECRET", "RABBITMQ_PASSWORD", "POSTGRES_PASSWORD"]
        + [db_password_variable(s) for s in SERVICES]
        + [broker_password_variable(app) for app in SERVICES + [GATEWAY]]
        + ["GRAFANA_ADMIN_PASSWORD"]
    )


# What a changed raw value needs beyond this script, said when it changes (docs/CONTAINERS.md has the commands).
_ROLE_NOTE = "; PostgreSQL keeps the old password until you ALTER ROLE (docs/CONTAINERS.md)"
AFTER_CHANGE = {
    "JWT_SECRET": "; the old one verifies until --drop-previous-jwt: restart the gateway, then accounts (SECURITY.md)",
    "RABBITMQ_PASSWORD": "; the broker takes it at its next start or with rabbitmqctl import_definitions "
    "(docs/CONTAINERS.md)",
    **{
        broker_password_variable(app): f"; the broker takes it at its next start or with rabbitmqctl "
        f"import_definitions, then restart {app} (docs/CONTAINERS.md)"
        for app in SERVICES + [GATEWAY]
    },
    "POSTGRES_PASSWORD": _ROLE_NOTE,
    **{db_password_variable(service): _ROLE_NOTE for service in SERVICES},
    "GRAFANA_ADMIN_PASSWORD": "; Grafana keeps the old password until you reset it with `grafana cli` "
    "(docs/CONTAINERS.md)",
}


def random_value():
    """A fresh secret: 43 URL-safe characters (256 bits)."""
    return secrets.token_urlsafe(32)


def password_hash(user, password):
    """RabbitMQ's rabbit_password_hashing_sha256 of `password`: base64(salt + sha256(salt + password)). The
    4-byte salt is derived from user and password, so an unchanged password gives an unchanged file."""
    salt = hmac.new(password.encode(), f"cartmesh broker salt {user}".encode(), hashlib.sha256).digest()[:4]
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def broker_definitions(raw):
    """RabbitMQ definitions (JSON text): the vhost /, the operators' administrator and one user per app with
    exactly its permissions on /."""

    def user(name, password, tags):
        return {
            "name": name,
            "password_hash": password_hash(name, password),
            "hashing_algorithm": "rabbit_password_hashing_sha256",
            "tags": tags,
        }

    users = [user(BROKER_USER, raw["RABBITMQ_PASSWORD"], ["administrator"])]
    permissions = [{"user": BROKER_USER, "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}]
    for app in SERVICES + [GATEWAY]:
        users.append(
            user(app, raw[broker_password_variable(app)], ["management"] if app == BROKER_MANAGEMENT_APP else [])
        )
        permissions.append({"user": app, "vhost": "/", **broker_permissions.permissions(app)})
    return json.dumps({"vhosts": [{"name": "/"}], "users": users, "permissions": permissions}, indent=2, sort_keys=True)


def layout(raw):
    """{directory: {file name: value}}: what each container's directory holds, made from the `raw` values."""

    def password(name):
        return quote(raw[name], safe="")  # an operator's own password may hold ':', '@' or '/'

    found = {}
    for app in SERVICES + [GATEWAY]:
        credentials = f"{app}:{password(broker_password_variable(app))}"
        files = {"AMQP_URI": f"amqp://{credentials}@{BROKER_HOST}:5672/"}
        if app != GATEWAY:
            files[database_url_variable(app)] = (
                f"postgresql://{app}:{password(db_password_variable(app))}@{DATABASE_HOST}:5432/{app}"
            )
        if app in JWT_HOLDERS:
            files["JWT_SECRET"] = raw["JWT_SECRET"]
            if app == GATEWAY and raw.get(PREVIOUS_JWT):  # only verifiers need the retired keys
                files[PREVIOUS_JWT] = raw[PREVIOUS_JWT]
        if app == GATEWAY:
            files["RABBITMQ_API_URI"] = f"http://{credentials}@{BROKER_HOST}:{BROKER_API_PORT}/api"
            files["REDIS_URL"] = REDIS_URL  # the rate-limit counters every gateway replica shares
        found[app] = files
    found["postgres"] = {
        name: raw[name] for name in ["POSTGRES_PASSWORD"] + [db_password_variable(s) for s in SERVICES]
    }
    found["rabbitmq"] = {"RABBITMQ_DEFAULT_PASS": raw["RABBITMQ_PASSWORD"], DEFINITIONS: broker_definitions(raw)}
    found["grafana"] = {"GF_SECURITY_ADMIN_PASSWORD": raw["GRAFANA_ADMIN_PASSWORD"]}
    return found


def owner(directory):
    return OWNERS.get(directory, APP_UID)


def check_value(name, value):
    """`value` if it can be stored as `name`, else SecretsError."""
    if not value.strip() or any(char in value for char in "\r\n\0"):
        raise SecretsError(f"{name}: the value is blank or holds a line break or NUL; choose another")
    return value


def read_value(path):
    with open(path) as value_file:
        return value_file.read()


def secure(path, mode, uid):
    """Gives `path` its mode and, when this runs as root, its owner (`uid`, group the same number)."""
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)


def write_value(path, value, uid):
    """Writes `value` to `path` through a temporary file, so that a reader never sees half a value."""
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as value_file:
        value_file.write(value)
    secure(temporary, 0o600, uid)
    os.replace(temporary, path)


def prepare_directory(path, uid):
    os.makedirs(path, exist_ok=True)  # in compose it is a volume's mount point, so it exists already
    secure(path, 0o700, uid)


def store(path, value, uid):
    """Makes the file at `path` hold `value` (mode 0600, owner `uid`); True if it had to be written."""
    if os.path.exists(path) and read_value(path) == value:
        secure(path, 0o600, uid)  # e.g. restored from a backup by another user
        return False
    write_value(path, value, uid)
    return True


def make_secrets(directory=DEFAULT_DIR, environ=None, rotate=(), drop_previous_jwt=False):
    """Brings `directory` to the layout above; returns what was done, one line each (never a value).

    `environ` (default os.environ) may give raw values; `rotate` names raw values to replace by new random
    ones. A JWT_SECRET that changes (rotated or replaced) is kept in JWT_PREVIOUS_SECRETS, so tokens signed
    with it still verify; `drop_previous_jwt` forgets the ones kept before. Every given value and option is
    checked before anything is written.
    """
    environ = os.environ if environ is None else environ
    names = raw_names()
    unknown = sorted(set(rotate) - set(names))
    if unknown:
        raise SecretsError(f"cannot rotate {', '.join(unknown)}: not one of {', '.join(names)}")
    given = {name: check_value(name, environ[name]) for name in names if environ.get(name)}
    clash = sorted(set(rotate) & set(given))
    if clash:
        raise SecretsError(
            f"cannot rotate {', '.join(clash)}: set in the environment, which wins; change or unset it there"
        )

    done = []
    raw_dir = os.path.join(directory, RAW)
    prepare_directory(raw_dir, owner(RAW))
    raw = {}
    changed_jwt = None
    for name in names:
        path = os.path.join(raw_dir, name)
        stored = read_value(path) if os.path.exists(path) else None
        if name in given:
            raw[name] = given[name]
            if stored != given[name]:
                done.append(
                    f"{RAW}/{name}: replaced by the value in the environment{AFTER_CHANGE[name]}"
                    if stored is not None
                    else f"{RAW}/{name}: taken from the environment"
                )
        elif stored is not None and name not in rotate:
            raw[name] = stored
        else:
            raw[name] = random_value()
            done.append(f"{RAW}/{name}: " + (f"rotated{AFTER_CHANGE[name]}" if stored is not None else "made (random)"))
        if name == "JWT_SECRET" and stored is not None and stored != raw[name]:
            changed_jwt = stored
        store(path, raw[name], owner(RAW))
    done += keep_previous_jwt(raw_dir, raw, replaced=changed_jwt, drop=drop_previous_jwt)

    for name, files in layout(raw).items():
        path = os.path.join(directory, name)
        prepare_directory(path, owner(name))
        for leftover in sorted(set(os.listdir(path)) - set(files)):
            os.remove(os.path.join(path, leftover))
            done.append(f"{name}/{leftover}: removed (not for this container)")
        for file_name, value in files.items():
            if store(os.path.join(path, file_name), value, owner(name)):
                done.append(f"{name}/{file_name}: written")
    return done


def keep_previous_jwt(raw_dir, raw, replaced=None, drop=False):
    """Brings raw/JWT_PREVIOUS_SECRETS up to date in `raw` and on disk: the `replaced` JWT_SECRET first, then
    those kept before unless `drop`; never the current one. Returns what was done."""
    path = os.path.join(raw_dir, PREVIOUS_JWT)
    kept = read_value(path).split(",") if os.path.exists(path) and not drop else []
    previous = [value for value in dict.fromkeys([replaced, *kept]) if value and value != raw["JWT_SECRET"]]
    raw[PREVIOUS_JWT] = ",".join(previous)
    done = []
    if previous:
        if store(path, raw[PREVIOUS_JWT], owner(RAW)) and replaced:
            done.append(
                f"{RAW}/{PREVIOUS_JWT}: keeps the replaced JWT_SECRET (tokens signed with it verify "
                "until --drop-previous-jwt)"
            )
    elif os.path.exists(path):
        os.remove(path)
        done.append(f"{RAW}/{PREVIOUS_JWT}: removed (tokens of retired keys are refused once the gateway restarts)")
    return done


def main(argv, environ=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("directory", nargs="?", default=DEFAULT_DIR)
    parser.add_argument(
        "--rotate",
        action="append",
        default=[],
        metavar="NAME",
        help=f"replace this raw value by a new random one ({', '.join(raw_names())})",
    )
    parser.add_argument(
        "--drop-previous-jwt",
        action="store_true",
        help="forget the retired JWT_SECRET values (do it once their tokens have expired)",
    )
    args = parser.parse_args(argv)
    try:
        done = make_secrets(args.directory, environ, args.rotate, args.drop_previous_jwt)
    except SecretsError as error:
        print(f"make_secrets: {error}", file=sys.stderr)
        return 2
    for line in done:
        print(f"make_secrets: {line}")
    if not done:
        print(f"make_secrets: {args.directory} is complete, nothing changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
