"""Property-based fuzz of the HTTP API from its own OpenAPI document (schemathesis), on a real server.

Properties: no input makes the server answer 5xx; every status it answers is one
the document declares; every declared body schema (results, the error envelope)
holds. Bounded: a few dozen generated requests per operation, deterministic seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

if TYPE_CHECKING:
    from tests.serve_fixtures import ServerProcess

pytest_plugins = ["tests.serve_fixtures"]  # session fixtures: live_server, built

# Upper bounds per operation and mode; hypothesis stops early on small input spaces
# (/healthz has one), so the whole run is ~150-200 requests, a few seconds.
POSITIVE_EXAMPLES = 40
NEGATIVE_EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def fuzz_operation(operation: APIOperation, mode: GenerationMode, examples: int, base_url: str) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9, so drive its strategies with hypothesis directly.
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, timeout=10)
        assert "Traceback" not in response.text
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize(
    ("mode", "examples"), [(GenerationMode.POSITIVE, POSITIVE_EXAMPLES), (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)]
)
def test_no_generated_request_breaks_the_api(live_server: ServerProcess, mode: GenerationMode, examples: int) -> None:
    schema = schemathesis.openapi.from_url(f"{live_server.base_url}/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results) >= 7, "every operation in the document must load"
    for operation in operations:
        has_parameters = bool(list(operation.iter_parameters()))
        if mode is GenerationMode.NEGATIVE and not has_parameters:
            continue  # nothing to make invalid
        fuzz_operation(operation, mode, examples, live_server.base_url)


def test_fuzzing_left_no_server_errors(live_server: ServerProcess) -> None:
    """Belt and braces: the server's own counters saw no 5xx across everything so far."""
    metrics = httpx.get(f"{live_server.base_url}/metrics", timeout=10).text
    server_errors = [
        line for line in metrics.splitlines() if line.startswith("linklens_http_requests_total") and 'status="5' in line
    ]
    assert server_errors == []
