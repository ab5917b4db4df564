# Two commands set up a fresh clone: `make run` (server on the embedded default) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run demo test lint format migrate lock clean assets

$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

## run: install into .venv and serve on http://127.0.0.1:8080 (SQLite in ./data, no services)
run: $(BIN)/.installed
	$(BIN)/contact-center serve

## demo: the server with seeded data and a simulated PBX placing calls
demo: $(BIN)/.installed
	$(BIN)/contact-center demo

## test: lint, type-check and run the test suite
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(BIN)/.installed
	$(BIN)/ruff check .

format: $(BIN)/.installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

migrate: $(BIN)/.installed
	$(BIN)/contact-center migrate

## lock: refresh constraints.txt from a clean resolve of pyproject.toml
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo '# Exact versions a fresh install uses (pip install -c constraints.txt). Regenerate with `make lock`.'; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e'; } > constraints.txt
	rm -rf .lock-venv

## assets: npm packages (package-lock.json) -> contact_center/web/static/vendor/ (committed)
VENDOR := contact_center/web/static/vendor
assets:
	npm ci --no-audit --no-fund
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/htmx $(VENDOR)/sortablejs
	cp node_modules/htmx.org/dist/htmx.min.js node_modules/htmx.org/LICENSE $(VENDOR)/htmx/
	cp node_modules/sortablejs/Sortable.min.js node_modules/sortablejs/LICENSE $(VENDOR)/sortablejs/
	{ echo "Copied by make assets from package-lock.json; do not edit."; \
	  node -e 'const l=require("./package-lock.json").packages; for (const [k,v] of Object.entries(l)) if (k) console.log(k.replace("node_modules/",""), v.version, v.license)'; \
	} > $(VENDOR)/VERSIONS.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
