"""Requests generated from the OpenAPI spec by schemathesis, valid and invalid: none gets a 500, and
every answer matches the spec (status code, content type, body schema).

(schemathesis' ``negative_data_rejection`` check is not used: in multipart forms every field travels
as text, so a "wrong type" it generates, such as k=1 as a number, is the same request as a valid one.)"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from vestis.api.app import create_app

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed")
from schemathesis import GenerationMode  # noqa: E402 - after the importorskip
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 30  # per operation and mode: bounds the run to well under a minute
# Operations whose inputs (if any) accept every value: there is nothing invalid to generate.
NO_INVALID_INPUT = {"GET /healthz", "GET /metrics", "GET /api/info", "GET /items/{item_id}", "GET /reindex",
                    "GET /synonyms"}


@pytest.fixture(scope="module")
def api_schema(collection_copy, api_encoder):
    app = create_app(collection_copy, encoder=api_encoder, workers=2, max_upload_bytes=200_000)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# schemathesis' own pytest plugin does not run under pytest 9, so each operation is driven
# through its Hypothesis strategy here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
def test_no_generated_request_gets_a_server_error(api_schema, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /search", "POST /submit", "POST /items", "GET /metrics",
                                               "DELETE /items/{item_id}", "GET /images/{item_id}",
                                               "GET /similar/{item_id}", "GET /items"}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.label in NO_INVALID_INPUT:
            continue

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def check(case):
            case.call_and_validate(checks=checks)

        check()
