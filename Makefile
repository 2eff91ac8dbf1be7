# Two commands for a fresh machine (see README "Quickstart"):
#   make run    set up .venv, build the demo SQLite store, show what the shipped policies do to it
#   make test   set up .venv with test tools and run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
POLICY ?= policies/infraux.yaml

.PHONY: run test lint venv demo clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/retention demo

# The main job on the embedded default: each shipped policy gets its own copy of the
# demo store and of its backup tree (var/backups, mtimes kept), and a copy of the policy
# in var/ (so its audit store, <policy>.audit.db, starts empty there); it is validated
# against them, planned (dry run), run, planned again, and its audit trail verified.
# The audit key below is for the demo only; set a real secret in production.
run: demo
	@set -e; for p in policies/*.yaml; do \
	  name=$$(basename $$p .yaml); db=var/demo-$$name.db; cp var/demo.db $$db; \
	  files=var/backups-$$name; rm -rf $$files; cp -Rp var/backups $$files; \
	  pol=var/policy-$$name.yaml; rm -f var/policy-$$name.audit.db; cp $$p $$pol; \
	  export RETENTION_DB_URL=sqlite:///$(CURDIR)/$$db RETENTION_BACKUP_ROOT=$(CURDIR)/$$files RETENTION_AUDIT_KEY=$${RETENTION_AUDIT_KEY:-demo-only-audit-key}; \
	  echo; echo "=== $$p on $$db and $$files"; \
	  $(BIN)/retention validate -c $$pol --connect; \
	  $(BIN)/retention plan -c $$pol; \
	  $(BIN)/retention run -c $$pol > var/run-$$name.log; \
	  echo "run: exit 0, $$(grep -c '"event": "batch"' var/run-$$name.log) batches committed (log: var/run-$$name.log)"; \
	  $(BIN)/retention plan -c $$pol | grep -E 'would be (affected|removed)'; \
	  $(BIN)/retention audit verify -c $$pol; \
	done

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict retention
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache .hypothesis
