"""Property-based: reading a RabbitMQ message body never fails in any way but MalformedMessage."""

import json

from hypothesis import given
from hypothesis import strategies as st

from deploy.runtime.amqp import MalformedMessage, from_message, to_message
from protocol.messages import Event

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                   max_size=4), max_leaves=10)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_are_read_or_refused_as_malformed(raw):
    try:
        event = from_message(raw)
    except MalformedMessage:
        return
    assert isinstance(event["id"], str) and isinstance(event["data"], dict)


@given(st.dictionaries(st.sampled_from(["specversion", "id", "type", "source", "data", "time"]), JSON))
def test_arbitrary_json_objects_are_read_or_refused_as_malformed(body):
    try:
        event = from_message(json.dumps(body).encode())
    except MalformedMessage:
        return
    assert event["specversion"] == "1.0" and isinstance(event["type"], str)


@given(seq=st.integers(1, 2**53), ident=st.text(min_size=1), kind=st.text(min_size=1),
       data=st.dictionaries(st.text(max_size=10), JSON, max_size=5))
def test_what_the_bridge_publishes_the_portal_reads_back(seq, ident, kind, data):
    event = Event(seq, ident, kind, "billing", "2026-11-24T00:00:00Z", data)
    read = from_message(to_message(event).body)
    assert (read["id"], read["type"], read["source"], read["data"]) == (ident, kind, "billing", data)
