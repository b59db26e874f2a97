# Two commands on a fresh machine:  `make run`  (the product)  and  `make test`  (every test).
VENV    ?= .venv
PYTHON  ?= python3
BIN     := $(VENV)/bin
INSTALLED := $(VENV)/.installed
VENDORED  := static/vendor/.installed

.PHONY: install run test lint format bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,ml]'
	touch $@

$(VENDORED): package.json package-lock.json scripts/vendor-static.mjs
	npm ci --no-audit --no-fund --loglevel=error
	npm run --silent vendor
	touch $@

install: $(INSTALLED) $(VENDORED)

run: install
	$(BIN)/sporeprint up

test: install
	scripts/ensure-test-services.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) node_modules static/vendor .pytest_cache .ruff_cache *.egg-info
