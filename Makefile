# Two commands matter: `make run` and `make test`. Everything else is a helper.
# the interpreter that creates .venv: python3.11, else python3 (dev/preflight.py checks its version)
PY ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null || echo python3.11)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the compiled data path (Cython, gateway/build_ext.py); rebuilt whenever one of its sources changes
EXT := gateway/ext.build
# gateway.COMPILED_MODULES (.py and .pxd) and gateway/__init__.py, which lists them
EXT_SRC := gateway/__init__.py $(foreach m,wire metrics auth upstream proxy,gateway/$(m).py) $(wildcard gateway/*.pxd)
# checkov in a virtualenv of its own (its pins clash with the test tools'): requirements/checkov.txt
CHECKOV := $(VENV)/checkov/bin/checkov

.PHONY: venv run test lint typecheck fuzz bench bench-users chaos clean lock containers-test release can-i-deploy record-deploy cross-version

# First run: one line per slow step (a later run with nothing changed prints none of them).
$(STAMP): requirements/*.txt shared/pyproject.toml
	@command -v $(PY) >/dev/null || { echo "make: no Python found ($(PY)): install Python 3.11 (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or name it: make run PY=/path/to/python3.11" >&2; exit 1; }
	@if test -x $(BIN)/python; then \
		echo "==> requirements changed: updating .venv (usually under a minute)"; \
	else \
		$(PY) dev/preflight.py python || exit 1; \
		echo "==> creating the virtualenv .venv with $(PY) (a few seconds)"; \
		rm -rf $(VENV); $(PY) -m venv $(VENV) || exit 1; \
		echo "==> installing the pinned dependencies into .venv from PyPI (first run only: about 2 minutes, 500 MB)"; \
	fi
	@$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	@$(BIN)/pip install -q --disable-pip-version-check -r requirements/dev.txt
	@touch $(STAMP)

$(EXT): $(STAMP) $(EXT_SRC) gateway/build_ext.py
	@if [ "$$GATEWAY_PURE_PYTHON" = 1 ]; then \
		echo "==> GATEWAY_PURE_PYTHON=1: the gateway runs uncompiled (no Cython build)"; \
	else \
		$(BIN)/python dev/preflight.py compiler || exit 1; \
		echo "==> compiling the gateway's data path with Cython (about a minute; again only when one of its sources changes)"; \
		$(BIN)/python gateway/build_ext.py; \
	fi

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

lint: $(STAMP)  ## ruff over the tree, mypy, no model change without its migration, no broken doc link
	$(BIN)/ruff check .
	@$(BIN)/ruff format --check . >/dev/null || { $(BIN)/ruff format --check . ; echo "make lint: run $(BIN)/ruff format ."; exit 1; }
	$(BIN)/python dev/check_links.py
	$(MAKE) --no-print-directory typecheck
	@$(BIN)/python contracts/broker.py check
	@for svc in users feed notifications; do \
		(cd services/$$svc && DJANGO_DEV=1 PYTHONWARNINGS=ignore::RuntimeWarning \
			../../$(BIN)/python manage.py makemigrations --check --dry-run >/dev/null) \
			|| { echo "make lint: $$svc has model changes without a migration (manage.py makemigrations)"; exit 1; }; \
	done

# mypy once per Django project: the django-stubs plugin loads one settings module per run
# (MYPYPATH=shared/src: from the root, the shared/ directory would shadow the package)
typecheck: $(STAMP)
	cd shared && DJANGO_DEV=1 DJANGO_SETTINGS_MODULE=users_service.settings MYPYPATH=../services/users \
		../$(BIN)/mypy --config-file ../mypy.ini src/shared
	DJANGO_DEV=1 DJANGO_SETTINGS_MODULE=users_service.settings MYPYPATH=shared/src:services/users \
		$(BIN)/mypy --config-file mypy.ini gateway dev bench tests/users_producer.py
	for svc in users feed notifications; do \
		(cd services/$$svc && DJANGO_DEV=1 DJANGO_SETTINGS_MODULE=$${svc}_service.settings \
			../../$(BIN)/mypy --config-file ../../mypy.ini .) || exit 1; \
	done

bench: $(STAMP) $(EXT)  ## benchmarks (print figures; need wrk/nginx: apt-get install -y wrk nginx)
	$(BIN)/python bench/run_all.py

bench-users: $(STAMP) $(EXT)
	$(BIN)/python bench/users_bench.py

# faults one at a time under the mix, with figures and the targets of docs/faults.md (exit 1 when one
# is missed); CHAOS_ARGS="--short --retry-missed 1" is CI's (.ci/run), CHAOS_ARGS=--long adds Redis
# away for 60 s
chaos: $(STAMP) $(EXT)  ## fault suite: Redis/Postgres away, SIGKILLs, rolling restarts, a hung replica
	$(BIN)/python bench/chaos.py $(CHAOS_ARGS)

clean:  ## the embedded servers' data, logs and keys (.run/, and the runtime directory used as root)
	@test -x $(BIN)/python && $(BIN)/python dev/infra.py clean || $(PY) dev/infra.py clean
	rm -rf .run

# schemathesis over every service's OpenAPI schema with more examples than `make test` uses
# (FUZZ_EXAMPLES per operation, default 300; docs/api-schema.md)
fuzz: $(STAMP)
	FUZZ_EXAMPLES=$${FUZZ_EXAMPLES:-300} $(BIN)/python dev/testrun.py users notifications feed -- -k test_api_conforms --timeout=3600

# Releases per component (docs/releasing.md): bump VERSION, changelog, image tags, commit, tag
# <component>-v<version>. SERVICE: users, feed, notifications, gateway or shared; PART: patch (default), minor, major
PART ?= patch
release:
	@test -n "$(SERVICE)" || { echo "make release SERVICE=users|feed|notifications|gateway|shared [PART=patch|minor|major]" >&2; exit 2; }
	$(PY) dev/release.py release $(SERVICE) --part $(PART)

# Is VERSION (a release, or `current` for the working tree; default current) of SERVICE compatible
# with what every environment in contracts/environments.json runs? (contracts/broker.py)
can-i-deploy:
	@test -n "$(SERVICE)" || { echo "make can-i-deploy SERVICE=users [VERSION=1.1.0|current] [ENV=production]" >&2; exit 2; }
	$(PY) contracts/broker.py can-i-deploy $(SERVICE) $(or $(VERSION),current) $(if $(ENV),--env $(ENV))

# after a deploy: record which release runs where (commit contracts/environments.json)
record-deploy:
	@test -n "$(ENV)" -a -n "$(SERVICE)" -a -n "$(VERSION)" || { echo "make record-deploy ENV=production SERVICE=users VERSION=1.1.0" >&2; exit 2; }
	$(PY) contracts/broker.py record-deploy $(ENV) $(SERVICE) $(VERSION)

# each component's last release against the others' working tree and the other way round, through
# the system journey (dev/cross_version.py; needs the release tags)
cross-version: $(STAMP) $(EXT)
	$(BIN)/python dev/cross_version.py
