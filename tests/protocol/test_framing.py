"""Framing (PROTOCOL.md section 2): byte boundaries, coalescing, limits, malformed bodies."""

import struct
from pathlib import Path

import msgpack
import pytest

import protocol

from protocol.errors import ErrorCode, ProtocolError
from protocol.session import SenderSession
from protocol.framing import FrameDecoder, encode_frame

MESSAGES = [
    {"type": "hello", "version": 1, "stream": "reservations", "node": "r1"},
    {"type": "event", "seq": 1, "event": {"id": "a", "type": "t", "source": "s", "time": "now", "data": {"x": [1, 2]}}},
    {"type": "ack", "seq": 1},
    {"type": "ping", "nonce": 7},
    {"type": "event", "seq": 2, "event": {"id": "é", "type": "t", "source": "s", "time": "now", "data": b"\x00" * 300}},
]
STREAM = b"".join(encode_frame(m) for m in MESSAGES)


def test_a_stream_split_at_every_byte_boundary_decodes_the_same():
    for cut in range(len(STREAM) + 1):
        decoder = FrameDecoder()
        decoded = decoder.feed(STREAM[:cut]) + decoder.feed(STREAM[cut:])
        assert decoded == MESSAGES, f"split at byte {cut}"
        assert decoder.buffered == 0


def test_a_stream_fed_one_byte_at_a_time_decodes_the_same():
    decoder = FrameDecoder()
    decoded = []
    for i in range(len(STREAM)):
        decoded += decoder.feed(STREAM[i : i + 1])
    assert decoded == MESSAGES


def test_many_frames_coalesced_into_one_read_decode_in_order():
    many = [{"type": "ack", "seq": i} for i in range(5000)]
    assert FrameDecoder().feed(b"".join(encode_frame(m) for m in many)) == many


def test_an_oversized_length_prefix_fails_from_the_prefix_alone():
    decoder = FrameDecoder(max_frame_size=1024)
    with pytest.raises(ProtocolError) as err:
        decoder.feed(struct.pack(">I", 1025))  # no body sent at all: nothing to wait for or allocate
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE
    assert decoder.buffered <= 4


def test_a_length_prefix_of_2_to_the_32_minus_1_is_refused_at_once():
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError) as err:
        decoder.feed(b"\xff\xff\xff\xff" + b"x" * 10)
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE


def test_a_decoder_stays_failed_after_an_error():
    decoder = FrameDecoder()
    with pytest.raises(ProtocolError):
        decoder.feed(b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame({"type": "ack", "seq": 1}))


def test_encoding_a_frame_over_the_maximum_is_refused():
    with pytest.raises(ProtocolError) as err:
        encode_frame({"type": "x", "pad": b"0" * 2000}, max_frame_size=1000)
    assert err.value.code is ErrorCode.FRAME_TOO_LARGE


def _frame(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "body, why",
    [
        (msgpack.packb([1, 2, 3]), "an array, not a map"),
        (msgpack.packb("hello"), "a string"),
        (msgpack.packb({"seq": 1}), "no type"),
        (msgpack.packb({"type": 5}), "type not a string"),
        (msgpack.packb({"type": "ack"}) + b"\x01", "trailing bytes"),
        (b"\xc1", "reserved msgpack byte"),
        (b"\x85\xa1", "truncated map"),
        (msgpack.packb({1: "x", "type": "ack"}), "non-string key"),
    ],
)
def test_malformed_bodies_are_malformed_frame(body, why):
    with pytest.raises(ProtocolError) as err:
        FrameDecoder().feed(_frame(body))
    assert err.value.code is ErrorCode.MALFORMED_FRAME, why


def test_a_zero_length_frame_is_malformed():
    with pytest.raises(ProtocolError) as err:
        FrameDecoder().feed(b"\x00\x00\x00\x00")
    assert err.value.code is ErrorCode.MALFORMED_FRAME


def test_a_truncated_frame_is_buffered_not_decoded():
    frame = encode_frame({"type": "ack", "seq": 3})
    decoder = FrameDecoder()
    assert decoder.feed(frame[:-1]) == []
    assert decoder.buffered == len(frame) - 1


def test_the_spec_example_frame_is_byte_exact():
    # PROTOCOL.md section 10 prints this frame in hex; the spec and the code must agree.
    spec = (Path(protocol.__file__).parent / "PROTOCOL.md").read_text()
    block = spec[spec.index("## 10. Example") :].split("```")[1]
    hex_text = " ".join(line.split("--")[0] for line in block.splitlines())
    frame = SenderSession("reservations", "r1", b"k" * 32, nonce_source=lambda n: b"\x07" * n, now=0.0).data_to_send()
    assert frame == bytes.fromhex(hex_text)
