# Two commands matter: `make run` and `make test`. Everything else is a helper.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the compiled data path (Cython, gateway/build_ext.py); rebuilt whenever proxy.py changes
EXT := gateway/proxy.build
# checkov in a virtualenv of its own (its pins clash with the test tools'): requirements/checkov.txt
CHECKOV := $(VENV)/checkov/bin/checkov

.PHONY: venv run test lint typecheck fuzz bench bench-users clean lock containers-test

$(STAMP): requirements/*.txt shared/pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/dev.txt
	@touch $(STAMP)

$(EXT): $(STAMP) gateway/proxy.py gateway/build_ext.py
	$(BIN)/python gateway/build_ext.py

$(CHECKOV): $(STAMP) requirements/checkov.txt
	@test -x $(VENV)/checkov/bin/python || $(BIN)/python -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/pip install -q -r requirements/checkov.txt
	@touch $(CHECKOV)

venv: $(STAMP) $(EXT) $(CHECKOV)

# docker-compose.yml and the images for real with podman (dev/containers_test.py; needs root)
containers-test: $(STAMP)
	$(BIN)/python dev/containers_test.py

# the images' lock files (hashes; docs/decisions.md#lock-tool), after editing a requirements file
lock: $(STAMP)
	UV=$(BIN)/uv dev/lock.sh

run: $(STAMP) $(EXT)  ## start everything locally (Ctrl-C stops it all)
	$(BIN)/python dev/run.py

test: $(STAMP) $(EXT) $(CHECKOV)  ## the whole suite against real Postgres, Redis and processes
	$(BIN)/python dev/testrun.py

lint: $(STAMP)  ## ruff over the tree, then mypy
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory typecheck

# mypy once per Django project: the django-stubs plugin loads one settings module per run
typecheck: $(STAMP)
	cd shared && DJANGO_DEV=1 DJANGO_SETTINGS_MODULE=users_service.settings MYPYPATH=../services/users \
		../$(BIN)/mypy --config-file ../mypy.ini src/shared
	for svc in users feed notifications; do \
		(cd services/$$svc && DJANGO_DEV=1 DJANGO_SETTINGS_MODULE=$${svc}_service.settings \
			../../$(BIN)/mypy --config-file ../../mypy.ini .) || exit 1; \
	done

bench: $(STAMP) $(EXT)  ## benchmarks (print figures; need wrk/nginx: apt-get install -y wrk nginx)
	$(BIN)/python bench/run_all.py

bench-users: $(STAMP) $(EXT)
	$(BIN)/python bench/users_bench.py

clean:
	rm -rf .run

# schemathesis over every service's OpenAPI schema with more examples than `make test` uses
# (FUZZ_EXAMPLES per operation, default 300; docs/api-schema.md)
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(BIN)/python dev/testrun.py users notifications feed -- -k test_api_conforms --timeout=3600
