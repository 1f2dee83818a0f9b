"""Property-based: whatever body a client sends, billing answers within its contract; never a 500.

Against the real daemon and MariaDB (ApiClient checks every reply against the OpenAPI document).
"""

import uuid

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.auth import CALLER_KINDS, caller_headers

KEYS = st.sampled_from(["email", "name", "code", "reason", "password", "x"])
SCALARS = (st.none() | st.booleans() | st.integers(-2**63, 2**63) | st.floats(allow_nan=False)
           | st.text(max_size=40) | st.sampled_from(["a@b.co", "x" * 300, "\u0000", "\ud800", "é@ü.de"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
                    max_leaves=10)
ORDER = str(uuid.uuid4())  # no such order: every pay or refund of it is refused, whatever the body
CALLS = st.sampled_from([("/api/users", {}), ("/api/sessions", {}), ("/api/checkin", {}),
                         (f"/api/orders/{ORDER}/pay", {"Idempotency-Key": "fuzz"}),
                         (f"/api/orders/{ORDER}/refund", {})])
CALLERS = st.sampled_from(CALLER_KINDS)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(call=CALLS, body=JSON, caller=CALLERS)
async def test_any_json_body_gets_an_answer_in_the_contract(pipeline, call, body, caller):
    if not hasattr(pipeline, "fuzz_billing"):
        pipeline.fuzz_billing = await pipeline.billing()
    path, headers = call
    anonymous = pipeline.fuzz_billing.api.as_(None)  # credentials only as the caller_headers say
    reply = await anonymous.post(path, body, headers={**headers, **caller_headers(caller)})
    assert reply.status in (201, 400, 401, 403, 404, 409, 422), (path, caller, body, reply.body)


@FUZZ
@given(template=st.sampled_from(["/api/users/{}", "/api/users/{}/orders", "/api/orders/{}"]),
       ident=st.text(min_size=1, max_size=60))
async def test_any_id_in_a_url_gets_an_answer_in_the_contract(pipeline, template, ident):
    from urllib.parse import quote

    if not hasattr(pipeline, "fuzz_billing"):
        pipeline.fuzz_billing = await pipeline.billing()
    reply = await pipeline.fuzz_billing.api.get(template.format(quote(ident, safe="")))
    assert reply.status in (200, 404), reply.body
