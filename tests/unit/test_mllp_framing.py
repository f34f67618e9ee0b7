import hashlib

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.mllp import END, START, Frame, FrameDecoder, OversizedFrame, StrayBytes, frame


def test_several_frames_in_one_read() -> None:
    events = FrameDecoder(1024).feed(frame(b"MSH|one") + frame(b"MSH|two"))
    assert events == [Frame(b"MSH|one"), Frame(b"MSH|two")]


def test_bytes_outside_frames_are_reported_not_delivered() -> None:
    events = FrameDecoder(1024).feed(b"junk" + frame(b"MSH|a") + b"\r\n")
    assert events == [StrayBytes(4), Frame(b"MSH|a"), StrayBytes(2)]


def test_oversized_frame_is_reported_with_its_head_and_the_next_frame_still_decodes() -> None:
    decoder = FrameDecoder(10)
    events = decoder.feed(frame(b"MSH|" + b"x" * 50) + frame(b"MSH|ok"))
    payload = b"MSH|" + b"x" * 50
    assert events == [OversizedFrame(54, payload, hashlib.sha256(payload).hexdigest()), Frame(b"MSH|ok")]


@given(cuts=st.lists(st.integers(min_value=1, max_value=299), max_size=10))
def test_an_oversized_frame_is_identified_by_the_sha256_of_all_its_bytes(cuts: list[int]) -> None:
    """The payload is not kept, its digest is: whatever the reads, it is the digest of every byte."""
    payload = b"MSH|" + bytes(range(1, 256)).replace(b"\x0b", b"").replace(b"\x1c", b"") + b"\x1c." * 10
    stream = frame(payload)
    decoder = FrameDecoder(100)
    events = []
    previous = 0
    for cut in [*sorted(set(cuts)), len(stream)]:
        events += decoder.feed(stream[previous:cut])
        previous = max(previous, cut)
    [event] = events
    assert isinstance(event, OversizedFrame) and payload.startswith(event.head)
    assert (event.size, event.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())


def test_frame_prefix_tells_an_hl7_message_from_other_bytes() -> None:
    decoder = FrameDecoder(1024)
    decoder.feed(START + b"MS")
    assert decoder.frame_prefix == b"MS"
    decoder.feed(b"H|^~")
    assert decoder.frame_prefix == b"MSH"


def test_end_marker_split_across_reads() -> None:
    decoder = FrameDecoder(1024)
    assert decoder.feed(START + b"MSH|a\x1c") == []
    assert decoder.mid_frame
    assert decoder.feed(b"\x0d") == [Frame(b"MSH|a")]


def test_lone_file_separator_inside_payload_is_kept() -> None:
    decoder = FrameDecoder(1024)
    decoder.feed(START + b"MSH|a\x1c")
    assert decoder.feed(b"b" + END) == [Frame(b"MSH|a\x1cb")]


@given(
    payloads=st.lists(st.binary(max_size=200).filter(lambda b: START not in b and END not in b), max_size=8),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=12),
)
def test_any_split_of_a_stream_yields_the_same_frames(payloads: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(frame(p) for p in payloads)
    decoder = FrameDecoder(10_000)
    events = []
    previous = 0
    for cut in [*sorted({c for c in cuts if c < len(stream)}), len(stream)]:
        events += decoder.feed(stream[previous:cut])
        previous = cut
    assert [e for e in events if isinstance(e, Frame)] == [Frame(p) for p in payloads]
