#!/bin/sh
# The app containers' entrypoint (docker-compose.yml): `entrypoint.sh COMMAND [ARG...]`.
#
# Exports each file in $CARTMESH_SECRETS_DIR (this container's own directory of secrets, made by the `secrets`
# service: docker/make_secrets.py) as the environment variable of the same name, holding the file's content,
# then replaces itself with COMMAND. A variable already set to a non-empty value in the container's
# environment keeps it: the environment wins. Names that are not variable names (temporary files) are skipped.
# `docker exec` does not pass through here, so the healthchecks and any command run that way must be prefixed
# with this script to see the secrets.
set -eu

if [ "$#" -eq 0 ]; then
  echo "entrypoint: usage: entrypoint.sh COMMAND [ARG...]" >&2
  exit 64
fi
_dir=${CARTMESH_SECRETS_DIR:-}
if [ -z "$_dir" ] || [ ! -d "$_dir" ]; then
  echo "entrypoint: CARTMESH_SECRETS_DIR ('$_dir') is not a directory: did the secrets service run?" >&2
  exit 1
fi
_found=0
for _file in "$_dir"/*; do
  # Without a match the pattern stays as it is, which is no file either.
  [ -f "$_file" ] || continue
  _name=${_file##*/}
  case $_name in
    [!A-Za-z_]* | *[!A-Za-z0-9_]* | _*) continue ;;
  esac
  _found=$((_found + 1))
  # The name is a plain variable name (checked above), so this eval only reads that variable.
  eval "_current=\${$_name:-}"
  if [ -z "$_current" ]; then
    _value=$(cat "$_file")  # a failed read stops here (set -e): better than starting half-configured
    export "$_name=$_value"
  fi
done
if [ "$_found" -eq 0 ]; then
  echo "entrypoint: no secrets in $_dir: did the secrets service run? (docker compose logs secrets)" >&2
  exit 1
fi
unset _dir _found _file _name _current _value
exec "$@"
