# Two commands matter: `make run` and `make test`. Everything else is a helper.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench bench-users clean

$(STAMP): requirements/*.txt shared/pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/dev.txt
	@touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)  ## start everything locally (Ctrl-C stops it all)
	$(BIN)/python dev/run.py

test: $(STAMP)  ## the whole suite against real Postgres, Redis and processes
	$(BIN)/python dev/testrun.py

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)  ## benchmarks (print figures; need wrk/nginx: apt-get install -y wrk nginx)
	$(BIN)/python bench/run_all.py

bench-users: $(STAMP)
	$(BIN)/python bench/users_bench.py

clean:
	rm -rf .run
