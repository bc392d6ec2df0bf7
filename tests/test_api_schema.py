"""Schemathesis against the API's own OpenAPI schema, over real HTTP, on both primaries.

Generated requests, valid (positive) and invalid (negative) per the schema,
must never get a 5xx, and every response must conform to the schema it is
documented with. The product id is pinned to the key's product so requests
get past the 403 and reach the routes; users, sessions, bodies and headers
are generated.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.api_server import ApiServer

MAX_EXAMPLES = 30

pytestmark = pytest.mark.django_db(transaction=True)


def test_generated_requests_get_no_5xx_and_conforming_responses(api_server: ApiServer, make_key, primary: str) -> None:
    key = make_key("p1")
    headers = {"Authorization": f"Bearer {key}"}
    with api_server.client(key) as c:  # some data for the reads to find
        c.post("/api/v1/products/p1/users/u1/sessions/s1/start")
        c.post(
            "/api/v1/products/p1/users/u1/sessions/s1/end",
            json={"snapshot": {"session_id": "s1", "started_at": 1_700_000_000, "captured_at": 1_700_000_060}},
        )
    schema = schemathesis.openapi.from_url(f"{api_server.url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 16  # with the insight, erasure (api/erasure.py) and support (api/support.py) routes

    pinned = {"product_id": "p1"}
    for operation in operations:
        cases = st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE, path_parameters=pinned),
            operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=pinned),
        )

        @given(case=cases)
        @hypothesis_settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(
                base_url=api_server.url,
                headers=headers,
                checks=[not_a_server_error, response_schema_conformance],
            )

        check()
