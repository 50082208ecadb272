# One image for every Cartmesh service and the gateway; docker-compose.yml gives each container its command
# (the same commands `make run` uses), run through docker/entrypoint.sh, which exports the container's secrets.
# The same image makes those secrets (docker/make_secrets.py, the compose service `secrets`). No secret is in
# the image. Build context: see .dockerignore (an allowlist).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    EVENTLET_NO_GREENDNS=yes \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Runtime dependencies only (no test tools), in their own layer: rebuilt only when requirements.txt changes.
# The import check fails the build, not a container, if nameko's CLI lacks anything (it needs pkg_resources).
COPY requirements.txt .
RUN pip install -r requirements.txt && python -c "import nameko.cli.main"

COPY . .

# A fixed numeric uid, so that an orchestrator can verify "runs as non-root"; the code stays owned by root,
# read-only to the process.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cartmesh
USER 10001:10001

# No ENTRYPOINT or CMD of its own: each container's are in docker-compose.yml (migrate, then `nameko run`,
# never with --backdoor-port), and Kubernetes sets its own (deploy/k8s).
