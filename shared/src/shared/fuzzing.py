"""Test helpers for the OpenAPI contract: schema generation checks and schemathesis fuzzing.

Each service's `tests/test_openapi.py` uses these:

    def test_schema_is_clean():
        schema = generate_schema()          # manage.py spectacular --validate --fail-on-warn
        assert_routes(schema, PUBLIC_ROUTES)

    schema = schemathesis.pytest.from_fixture("api_schema")

    @schema.parametrize()
    @fuzz_settings()
    def test_api_conforms(case, bearer):
        fuzz_call(case, bearer)

The fuzzer drives the service's own WSGI application in-process, inside the test's database
transaction (rolled back afterwards), against the real Postgres and Redis of the test run.
`FUZZ_EXAMPLES` sets the examples per operation: small for `make test`, large for `make fuzz`.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import schemathesis
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis import checks

DEFAULT_EXAMPLES = 8
METHODS = ("get", "put", "post", "patch", "delete")
# the public API's description, in the repository (the `shared` package is installed editable there)
API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def examples() -> int:
    return int(os.environ.get("FUZZ_EXAMPLES", DEFAULT_EXAMPLES))


def fuzz_settings(**overrides: Any) -> settings:
    """Hypothesis settings for the fuzz tests: FUZZ_EXAMPLES examples, no deadline, nothing stored.

    The quick run (`make test`, FUZZ_EXAMPLES unset) is derandomized so it is reproducible in CI;
    `make fuzz` explores new inputs on every run."""
    return settings(
        max_examples=examples(),
        deadline=None,
        database=None,
        derandomize="FUZZ_EXAMPLES" not in os.environ,
        suppress_health_check=list(HealthCheck),
        **overrides,
    )


def load_schema(application):
    """The service's schema as schemathesis sees it, fetched from its own /api/schema/ through `application`.
    Unknown query parameters are ignored by the services, as by most HTTP APIs: not generated as errors."""
    config = schemathesis.Config.from_dict({"generation": {"allow-extra-parameters": False}})
    return schemathesis.openapi.from_wsgi("/api/schema/?format=json", application, config=config)


def generate_schema() -> dict:
    """`manage.py spectacular --validate --fail-on-warn`: raises on any warning, error or invalid schema."""
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", out.name)
        with open(out.name) as generated:
            return json.load(generated)


def served_paths(client) -> set[str]:
    """The paths of the schema the service serves at /api/schema/ (asserts that it answers 200)."""
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return set(response.json()["paths"])


def operations(schema: dict) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in schema["paths"].items() for method in item if method in METHODS}


def path_shape(path: str) -> str:
    """A path without its query and with every parameter unnamed: `/posts/{id}` and `/posts/{post_id}` agree."""
    return re.sub(r"\{[^}]*\}", "{}", path.split("?", 1)[0])


def documented_routes(service: str) -> list[tuple[str, str]]:
    """(METHOD, path) of every row of docs/api.md's endpoint table that `service` serves."""
    rows = []
    for line in API_DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0] == service and cells[1] in {m.upper() for m in METHODS}:
            rows.append((cells[1], cells[2].split("?", 1)[0]))
    assert rows, f"docs/api.md documents no route of {service}"
    return rows


def assert_matches_api_doc(schema: dict, service: str) -> None:
    """The service's public operations (all but /internal/) are exactly docs/api.md's rows for it."""
    documented = {(method, path_shape(path)) for method, path in documented_routes(service)}
    public = {(method, path_shape(path)) for method, path in operations(schema) if not path.startswith("/internal/")}
    assert documented == public, (
        f"only in docs/api.md: {sorted(documented - public)}; only in the schema: {sorted(public - documented)}"
    )


def documented_schema(service: str, *, extra_routes: Iterable[tuple[str, str]] = ()) -> dict:
    """The service's generated schema (no warning), held to docs/api.md: its public routes are
    exactly the table's rows for `service`, and those and `extra_routes` each document a success
    and their errors (assert_routes)."""
    schema = generate_schema()
    assert_matches_api_doc(schema, service)
    assert_routes(schema, [*documented_routes(service), *extra_routes])
    return schema


def served_shapes(client) -> set[str]:
    """path_shape of every path in the schema the service serves (served_paths)."""
    return {path_shape(path) for path in served_paths(client)}


def documented_shapes(service: str) -> set[str]:
    """path_shape of every path docs/api.md gives `service`."""
    return {path_shape(path) for _, path in documented_routes(service)}


def assert_routes(schema: dict, expected: Iterable[tuple[str, str]]) -> None:
    """Every (METHOD, path) in `expected` is documented, each with responses for success and errors.
    Paths match whatever their parameters are named (path_shape)."""
    by_shape = {(method, path_shape(path)): (method, path) for method, path in operations(schema)}
    missing = sorted(route for route in expected if (route[0], path_shape(route[1])) not in by_shape)
    assert not missing, f"routes missing from the schema: {missing}"
    for method, path in (by_shape[route[0], path_shape(route[1])] for route in expected):
        operation = schema["paths"][path][method.lower()]
        codes = set(operation["responses"])
        assert any(code.startswith("2") for code in codes), (method, path, codes)
        errors = {code for code in codes if code >= "400"}
        for code in errors:
            content = operation["responses"][code].get("content", {})
            assert list(content) == ["application/problem+json"], (method, path, code, content)
            assert content["application/problem+json"]["schema"] == {"$ref": "#/components/schemas/Problem"}
        if operation.get("security"):
            assert "401" in codes, (method, path, "authenticated but no 401 documented")


@contextmanager
def _keep_test_connection():
    """As Django's test client does: the in-process request must not close the test's DB connection
    (request_started/finished close connections whose autocommit differs, as inside a test transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _schema_cannot_tell(case, business_rules: Iterable[str]) -> bool:
    """A schema-valid request that the service may rightly refuse for reasons a schema cannot express:
    a cursor not signed by this service, an Idempotency-Key already used with another body in this run,
    or a rule of the operation itself (a password too common, a name taken)."""
    return (
        bool((case.query or {}).get("cursor"))
        or "Idempotency-Key" in (case.headers or {})
        or f"{case.method.upper()} {case.path}" in set(business_rules)
    )


def fuzz_call(case, token: str, *, service_token: str | None = None, business_rules: Iterable[str] = ()):
    """Send one generated request with a real credential and validate the response against the schema
    with schemathesis' default checks: no 5xx; documented status code, content type, headers and body;
    schema-valid data accepted (except where `_schema_cannot_tell`), invalid data refused; and an
    authenticated operation refuses the request without its credential (ignored_auth)."""
    credential = service_token if case.path.startswith("/internal/") and service_token else token
    excluded = [checks.positive_data_acceptance] if _schema_cannot_tell(case, business_rules) else []
    with _keep_test_connection():
        # identity: schemathesis' in-process (WSGI) transport asks for gzip but does not decode it;
        # compression is tested in each service's suite and end to end (tests/test_system_wire.py)
        return case.call_and_validate(
            headers={"Authorization": f"Bearer {credential}", "Accept-Encoding": "identity"}, excluded_checks=excluded
        )
