"""`python3 deploy/k8s/overlays/dev/make_secrets.py [--namespace NS] [--print]`: the dev overlay's Secrets, made up.

The manifests only ever refer to Secrets (no secret value is in git). For the dev overlay this script makes every
one they refer to, with fresh random values, and creates them in the namespace (default `cartmesh-dev`, made if
missing) with `kubectl`. It never overwrites: the database roles get their passwords when the PostgreSQL volume is
first made, so when all the Secrets exist it does nothing, and when only some do it stops and says which (delete
them and the `data-postgres-0` volume claim to start over). `--print` writes the manifests to stdout instead
and touches no cluster.

Production makes the same Secrets with its own secret manager: docs/KUBERNETES.md lists every name and key.
Standard library only. Values are hex, so they are safe inside connection URLs.
"""

import argparse
import json
import secrets
import subprocess
import sys

# Every Cartmesh service that has a Deployment in deploy/k8s/base (tests/ops checks both lists agree).
SERVICES = ["accounts", "catalog", "carts", "orders", "payments"]
BROKER = "cartmesh-broker"  # the RabbitmqCluster's name, and so its Service's
VHOST = "cartmesh"
BROKER_USER = "cartmesh"


def random_value(nbytes=24):
    return secrets.token_hex(nbytes)


def secret(name, data):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "cartmesh"}},
        "stringData": data,
    }


def make_secrets(namespace):
    """The dev Secrets as a list of manifests (dicts), with new random values."""
    broker_password = random_value()
    broker_host = f"{BROKER}.{namespace}.svc"  # a full name: KEDA reads it from its own namespace
    role_passwords = {service: random_value() for service in SERVICES}
    found = [
        # The application's broker user (imported by the User in deploy/k8s/broker), its AMQP URI, the
        # management API that KEDA reads queue depths from (credentials apart), and the same API with the
        # credentials in it for the gateway's GET /services (RABBITMQ_API_URI).
        secret(
            "cartmesh-amqp",
            {
                "username": BROKER_USER,
                "password": broker_password,
                "uri": f"amqp://{BROKER_USER}:{broker_password}@{broker_host}:5672/{VHOST}",
                "management-uri": f"http://{broker_host}:15672/",
                "management-api-uri": f"http://{BROKER_USER}:{broker_password}@{broker_host}:15672/api",
            },
        ),
        # `previous`: retired signing keys the gateway still accepts; none yet (SECURITY.md, rotation).
        secret("cartmesh-jwt", {"secret": random_value(32), "previous": "", "session": ""}),
        secret("cartmesh-admin", {"email": "admin@example.com", "password": random_value(12)}),
        # The gateway's shared rate-limit counters: no Redis in dev, so each replica counts alone.
        secret("cartmesh-redis", {"url": ""}),
        secret(
            "cartmesh-postgres",
            {
                "password": random_value(),
                **{f"{service}-password": password for service, password in role_passwords.items()},
            },
        ),
    ]
    for service, password in role_passwords.items():
        found.append(
            secret(
                f"cartmesh-{service}-db",
                {"url": f"postgresql://{service}:{password}@postgres.{namespace}.svc:5432/{service}"},
            )
        )
    return found


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True)


def existing(namespace, names):
    """The names among `names` of Secrets that exist in `namespace`."""
    return [
        name for name in names if kubectl("get", "secret", name, "--namespace", namespace, "-o", "name").returncode == 0
    ]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", default="cartmesh-dev")
    parser.add_argument("--print", action="store_true", help="write the manifests to stdout; change nothing")
    args = parser.parse_args(argv)
    manifests = make_secrets(args.namespace)
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests}, indent=2)
    if args.print:
        print(document)
        return 0
    names = [manifest["metadata"]["name"] for manifest in manifests]
    if kubectl("get", "namespace", args.namespace, "-o", "name").returncode != 0:
        made = kubectl("create", "namespace", args.namespace)
        if made.returncode != 0:
            print(made.stderr, file=sys.stderr, end="")
            return 1
    present = existing(args.namespace, names)
    if len(present) == len(names):
        print(f"all {len(names)} Secrets already exist in {args.namespace}: nothing to do")
        return 0
    if present:
        print(
            f"some Secrets exist already in {args.namespace}: {', '.join(present)}.\n"
            "They must be made together (the database URLs carry the roles' passwords): delete those, and the\n"
            "volume claim data-postgres-0 if PostgreSQL was started with them, then run this again.",
            file=sys.stderr,
        )
        return 1
    created = kubectl("create", "--namespace", args.namespace, "-f", "-", stdin=document)
    print(created.stdout or created.stderr, end="", file=sys.stdout if created.returncode == 0 else sys.stderr)
    return created.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
