"""Property-based fuzzing of every route from the server's own /openapi.json (schemathesis):
valid and invalid requests alike must never get a 5xx, and replies must match the spec's
documented status codes, content types and schemas.

E5EMBED_FUZZ_EXAMPLES bounds the examples per operation (default 40).
"""

from __future__ import annotations

import os

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

URL = os.environ.get("E5EMBED_SERVER_URL", "http://127.0.0.1:9")
EXAMPLES = int(os.environ.get("E5EMBED_FUZZ_EXAMPLES", "40"))

schema = schemathesis.openapi.from_url(URL + "/openapi.json", wait_for_schema=30)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_api(case):
    case.call_and_validate(
        base_url=URL,
        timeout=60,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )
