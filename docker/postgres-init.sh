#!/usr/bin/env bash
# Runs once, when the postgres container first initialises its data volume (/docker-entrypoint-initdb.d/):
# for each name in CARTMESH_DATABASES ("accounts catalog carts"), a login role and a database of that name,
# the role owning only its own database (no other role may connect to it). The role's password is
# <NAME>_DB_PASSWORD (e.g. ACCOUNTS_DB_PASSWORD) from the environment or, when that is unset or empty, from the
# file of that name in CARTMESH_SECRETS_DIR (docker-compose.yml: the secrets volume, made by
# docker/make_secrets.py). The passwords only take effect on a fresh volume: after changing them, recreate it
# (docker compose down -v) or ALTER ROLE by hand (docs/CONTAINERS.md).
set -e

for name in ${CARTMESH_DATABASES:?CARTMESH_DATABASES must list the services}; do
  if [[ ! $name =~ ^[a-z][a-z0-9_]*$ ]]; then
    echo "postgres-init: bad database name '$name'" >&2
    exit 1
  fi
  password_var="${name^^}_DB_PASSWORD"
  password="${!password_var:-}"
  password_file="${CARTMESH_SECRETS_DIR:-}/$password_var"
  if [[ -z $password && -n ${CARTMESH_SECRETS_DIR:-} && -f $password_file ]]; then
    password="$(< "$password_file")"
  fi
  if [[ -z $password ]]; then
    echo "postgres-init: $password_var is not set, nor a file in CARTMESH_SECRETS_DIR" \
         "('${CARTMESH_SECRETS_DIR:-}')" >&2
    exit 1
  fi
  echo "postgres-init: role and database '$name'"
  # psql variables (:"name", :'password') quote the values, so a password cannot break the statement.
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" \
       --dbname "${POSTGRES_DB:-postgres}" --set name="$name" --set password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
done
