# Everything a newcomer needs: `make run` serves the demo, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run shell test lint typecheck unit integration e2e browser bench soak audit lock clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Where `make run` listens: `make run PORT=8001`, `make run HOST=0.0.0.0`.
HOST ?= 127.0.0.1
PORT ?= 8000

run: $(STAMP)
	GIFTCARD_LOG_FORMAT=$${GIFTCARD_LOG_FORMAT:-text} $(BIN)/giftcard serve --demo --host '$(HOST)' --port '$(PORT)'

# A shell with .venv/bin first on PATH, where the `giftcard` program is; `exit` leaves it.
shell: $(STAMP)
	@echo "giftcard is $(CURDIR)/$(BIN)/giftcard; try: giftcard --help. Leave with: exit"
	@VIRTUAL_ENV='$(CURDIR)/$(VENV)' PATH='$(CURDIR)/$(BIN)':"$$PATH" "$${SHELL:-/bin/sh}"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy bench/run.py

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

e2e: $(STAMP)
	$(BIN)/pytest tests/e2e

# Shopper pages in Chromium (Debian's, at /usr/bin/chromium); screenshots in build/screenshots.
browser: $(STAMP)
	$(BIN)/pytest tests/browser

# Test processes `make test` runs at once (pytest-xdist), each taking whole test files.
TEST_WORKERS ?= 2

test: lint typecheck
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile

# Issue 100,000 cards and redeem codes (use case and HTTP) on SQLite and PostgreSQL, in
# scratch databases removed afterwards; PostgreSQL is skipped when 127.0.0.1:5432 is down.
bench: $(STAMP)
	$(BIN)/python bench/run.py

# The pinned dependencies (constraints.txt) against known vulnerabilities, with pip-audit in
# a virtual environment of its own, so that its dependencies never move the project's pins.
# It asks PyPI's JSON API about each pinned version; --strict fails on any version it could
# not ask about, so an unreachable service is a failure, never a silent pass.
PIP_AUDIT_VERSION := 2.10.1
AUDIT_VENV := build/audit-venv
AUDIT_STAMP := $(AUDIT_VENV)/.pip-audit-$(PIP_AUDIT_VERSION)

$(AUDIT_STAMP):
	rm -rf $(AUDIT_VENV)
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --quiet 'pip-audit==$(PIP_AUDIT_VERSION)'
	touch $(AUDIT_STAMP)

audit: $(AUDIT_STAMP)
	@status=0; $(AUDIT_VENV)/bin/pip-audit --requirement constraints.txt --no-deps \
		--disable-pip --strict --progress-spinner off >build/audit.txt 2>&1 || status=$$?; \
	cat build/audit.txt; \
	if grep -q 'could not be audited' build/audit.txt; then \
		echo "make audit FAILED: pip-audit could not look every pinned version up: its"; \
		echo "vulnerability service is unreachable from this machine, so nothing was checked."; \
	elif [ $$status -ne 0 ]; then \
		echo "make audit FAILED: a pinned dependency above has a known vulnerability; raise"; \
		echo "its pin in constraints.txt (make lock) to a fixed release."; \
	fi; \
	exit $$status

# The bank test's workload for SOAK_MINUTES (and on until 100 kills) against two servers of
# two workers sharing a private PostgreSQL (crash-restarted now and then) and Redis, each
# killed with SIGKILL every few seconds; the result in build/soak.json.
SOAK_MINUTES ?= 10

soak: $(STAMP)
	$(BIN)/python -m tests.faults.soak --minutes '$(SOAK_MINUTES)' --out build/soak.json

# Re-resolve every dependency to its newest release and pin the result.
lock:
	rm -rf .lockenv
	$(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet --upgrade pip
	.lockenv/bin/python -m pip install --quiet -e '.[dev]'
	.lockenv/bin/python -m pip freeze --exclude-editable | grep -v '^giftcard' > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
