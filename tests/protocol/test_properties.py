"""Property-based: whatever bytes arrive, the protocol raises only its own errors."""

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import ProtocolError, RemoteError
from protocol.framing import FrameDecoder, encode_frame
from protocol.session import ReceiverSession, SenderSession

SECRET = b"s" * 32

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
        ReceiverSession(["s"], SECRET, "r"),
        SenderSession("s", "n", SECRET),
    ):
        try:
            session.receive_data(frame)
        except (ProtocolError, RemoteError):
            pass


@given(st.binary(max_size=512))
def test_receiver_session_meets_arbitrary_bytes_with_protocol_errors_only(data):
    try:
        ReceiverSession(["s"], SECRET, "r").receive_data(data)
    except (ProtocolError, RemoteError):
        pass
