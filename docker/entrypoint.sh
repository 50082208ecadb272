#!/bin/sh
# The app containers' entrypoint (docker-compose.yml): `entrypoint.sh COMMAND [ARG...]`.
#
# Gives the app its secrets as environment variables, from two places, then replaces itself with COMMAND:
#
# 1. `<NAME>_FILE` variables (the convention of the official images, for Docker or Kubernetes secrets mounted
#    as files, e.g. JWT_SECRET_FILE=/run/secrets/jwt): NAME is exported with the content of that file
#    (trailing newlines dropped). A file that cannot be read stops the container.
# 2. The files in $CARTMESH_SECRETS_DIR (this container's own directory of secrets, made by the `secrets`
#    service: docker/make_secrets.py), each exported as the variable of the same name. Names that are not
#    variable names (temporary files) are skipped. When CARTMESH_SECRETS_DIR is set it must be a directory
#    holding at least one secret; when it is unset this step is skipped (secrets come from 1 or the
#    environment).
#
# A variable already set to a non-empty value wins over both, and a `_FILE` over the directory.
# `docker exec` does not pass through here, so the healthchecks and any command run that way must be prefixed
# with this script to see the secrets.
set -eu

if [ "$#" -eq 0 ]; then
  echo "entrypoint: usage: entrypoint.sh COMMAND [ARG...]" >&2
  exit 64
fi

# 1. NAME_FILE. `env` may print multi-line values; a line that only looks like NAME_FILE=... is skipped
# below because no such variable is set.
for _name in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)_FILE=.*/\1/p'); do
  case $_name in
    _*) continue ;;
  esac
  # Plain variable names (the pattern above), so these evals only read variables.
  eval "_path=\${${_name}_FILE:-}"
  eval "_current=\${$_name:-}"
  if [ -n "$_path" ] && [ -z "$_current" ]; then
    if [ ! -r "$_path" ] || [ ! -f "$_path" ]; then
      echo "entrypoint: ${_name}_FILE names $_path, which is not a readable file" >&2
      exit 1
    fi
    _value=$(cat "$_path")
    export "$_name=$_value"
  fi
done

# 2. The container's secrets directory.
_dir=${CARTMESH_SECRETS_DIR-}
if [ -n "${CARTMESH_SECRETS_DIR+set}" ]; then
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
fi
unset _dir _found _file _name _path _current _value
exec "$@"
