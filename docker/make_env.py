"""`python3 docker/make_env.py`: writes `.env`, the secrets `docker compose up` needs, as fresh random values.

docker-compose.yml has no default for any secret: each is `${NAME:?...}`, and compose reads `.env` in the repo
root. This script makes that file (mode 600; keep it out of git): every variable that is missing gets a new
random value, and a value already there is never changed, since the databases' passwords are fixed when the
postgres volume is first made (changing one later means `docker compose down -v`, which deletes the data).

It also sets ADMIN_EMAIL (admin@example.com) and a random ADMIN_PASSWORD, so that the system starts with an
administrator and `make seed` can log in: `set -a; . ./.env; set +a; make seed`. Remove the two lines for a
system without one.

Standard library only, so it runs before any virtualenv exists. Values are URL-safe, since the database
passwords are written into connection URLs.
"""
import os
import secrets
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from scripts.run import SERVICES  # noqa: E402 -- the one list of services

ENV_FILE = os.path.join(ROOT, ".env")


def variables():
    """[(name, what it is, how to make its value)], in the order they are written."""
    def random_value():
        return secrets.token_urlsafe(32)

    found = [
        ("JWT_SECRET", "signs access tokens: accounts issues them, the gateway verifies them", random_value),
        ("RABBITMQ_PASSWORD", "the broker user 'cartmesh'", random_value),
        ("POSTGRES_PASSWORD", "the PostgreSQL superuser 'postgres'", random_value),
    ]
    for service in SERVICES:
        found.append((f"{service.upper()}_DB_PASSWORD", f"the database role '{service}'", random_value))
    found += [
        ("ADMIN_EMAIL", "the administrator accounts creates at start-up", lambda: "admin@example.com"),
        ("ADMIN_PASSWORD", "that administrator's password", lambda: secrets.token_urlsafe(16)),
    ]
    return found


def existing_names(text):
    names = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            names.add(line.split("=", 1)[0].strip())
    return names


def make_env(path=ENV_FILE):
    """Adds every missing variable to the file at `path` (made if absent); returns the names added."""
    text = ""
    if os.path.exists(path):
        with open(path) as env_file:
            text = env_file.read()
    present = existing_names(text)
    lines = [f"# {what}\n{name}={make()}\n" for name, what, make in variables() if name not in present]
    added = [name for name, _, _ in variables() if name not in present]
    if added:
        if text and not text.endswith("\n"):
            text += "\n"
        if not text:
            text = "# Secrets for docker compose, made by docker/make_env.py. Keep this file out of git.\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as env_file:
            env_file.write(text + "".join(lines))
    os.chmod(path, 0o600)
    return added


def main(argv):
    path = argv[0] if argv else ENV_FILE
    added = make_env(path)
    if added:
        print(f"{path}: added {', '.join(added)}")
    else:
        print(f"{path}: already complete, nothing changed")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
