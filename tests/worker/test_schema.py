"""schemathesis against the worker's own OpenAPI schema: whatever it admits, no 5xx and no hang."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.fixtures_worker import API_KEY

pytestmark = pytest.mark.slow
AUTH = {"x-api-key": API_KEY, "authorization": f"Bearer {API_KEY}"}
EXAMPLES = settings(
    max_examples=10, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def test_no_input_makes_the_worker_fail_or_hang(worker):
    raw = httpx.get(worker.base_url + "/openapi.json", headers=AUTH, timeout=10).json()
    operations = [
        result.ok() for result in schemathesis.openapi.from_dict(raw).get_all_operations()
    ]
    assert {"/v1/messages", "/v1/chat/completions", "/v1/cache"} <= {op.path for op in operations}
    calls: list[int] = []
    for operation in operations:

        @EXAMPLES
        @given(case=operation.as_strategy())
        def check(case):
            # A generation runs up to the worker's 64-token cap; slower than 60 s is a hang.
            response = case.call_and_validate(
                base_url=worker.base_url, headers=AUTH, checks=[not_a_server_error], timeout=60
            )
            calls.append(response.status_code)

        check()
    assert len(calls) >= 3 * len(operations)  # it really sent generated requests
