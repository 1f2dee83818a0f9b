"""Property-based: whatever bytes arrive, the decoder raises only its own errors and a session only reports."""

from hypothesis import given, settings
from hypothesis import strategies as st

import typing

from protocol.errors import ProtocolError
from protocol.framing import FrameDecoder, encode_frame
from protocol.session import TERMINAL, ReceiverSession, SenderSession, SessionEvent, State

SECRET = b"s" * 32
EVENT_TYPES = typing.get_args(SessionEvent)


def assert_reported(session, events: list) -> None:
    """Hostile input never raises out of a session: it yields events of the one union, ending closed."""
    assert all(isinstance(event, EVENT_TYPES) for event in events), events
    if any(isinstance(event, TERMINAL) for event in events):
        assert isinstance(events[-1], TERMINAL) and session.state is State.CLOSED

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20) | st.binary(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=2048))
def test_decoding_arbitrary_bytes_raises_only_protocol_error(data):
    try:
        FrameDecoder(max_frame_size=4096).feed(data)
    except ProtocolError:
        pass


@given(st.lists(st.binary(max_size=64), max_size=20))
def test_arbitrary_chunks_raise_only_protocol_error(chunks):
    decoder = FrameDecoder(max_frame_size=4096)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
    except ProtocolError:
        pass


@given(st.dictionaries(st.text(max_size=10), msgpack_values, max_size=6), st.text(max_size=12))
def test_arbitrary_maps_round_trip(extra, kind):
    message = {**extra, "type": kind}
    assert FrameDecoder().feed(encode_frame(message)) == [message]


@settings(max_examples=300)
@given(st.dictionaries(st.text(max_size=10), msgpack_values, max_size=6), st.text(max_size=12))
def test_sessions_meet_arbitrary_well_framed_messages_with_protocol_errors_only(body, kind):
    frame = encode_frame({**body, "type": kind})
    for session in (
        ReceiverSession(["s"], SECRET, "r", now=0.0),
        SenderSession("s", "n", SECRET, now=0.0),
    ):
        assert_reported(session, session.receive_data(frame, 1.0))


@given(st.binary(max_size=512))
def test_receiver_session_meets_arbitrary_bytes_with_protocol_errors_only(data):
    session = ReceiverSession(["s"], SECRET, "r", now=0.0)
    assert_reported(session, session.receive_data(data, 1.0))
