"""FHS/BHS batches split into messages, each kept byte for byte."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from services.gateway.hl7.batch import split_batch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
ONE = (FIXTURES / "ok_v251.hl7").read_bytes()
TWO = (FIXTURES / "ok_crlf.hl7").read_bytes()


def test_a_single_message_is_one_item_unchanged() -> None:
    batch = split_batch(ONE)
    assert (batch.messages, batch.batches, batch.warnings) == ([ONE], 0, [])


def test_a_file_of_batches_is_split_into_its_messages() -> None:
    body = (b"FHS|^~\\&|LIS|LAB\rBHS|^~\\&|LIS|LAB\r" + ONE + TWO + b"BTS|2\r"
            + b"BHS|^~\\&|LIS|LAB\r" + ONE + b"BTS|1\rFTS|2\r")
    batch = split_batch(body)
    assert batch.messages == [ONE, TWO, ONE]
    assert (batch.batches, batch.warnings) == (2, [])


def test_wrong_counts_are_warnings() -> None:
    batch = split_batch(b"BHS|^~\\&\r" + ONE + b"BTS|3\rFTS|2\r")
    assert batch.messages == [ONE]
    assert batch.warnings == ["BTS-1: batch 1 announces 3 messages, 1 were sent",
                              "FTS-1: file announces 2 batches, 1 were sent"]


def test_what_is_outside_any_message_becomes_an_item_of_its_own() -> None:
    batch = split_batch(b"BHS|^~\\&\rGARBAGE|1\r" + ONE + b"BTS|1\r")
    assert batch.messages == [b"GARBAGE|1\r", ONE]


def test_an_empty_body_is_one_item() -> None:
    assert split_batch(b"").messages == [b""]
    assert split_batch(b"\r\n\r\n").messages == [b"\r\n\r\n"]


def test_a_byte_order_mark_and_lf_ends_are_accepted() -> None:
    lf = ONE.replace(b"\r", b"\n")
    assert split_batch(b"\xef\xbb\xbf" + lf + lf).messages == [lf, lf]


@given(st.lists(st.sampled_from([ONE, TWO]), min_size=1, max_size=8), st.booleans())
def test_messages_come_back_as_sent(messages: list[bytes], enveloped: bool) -> None:
    body = b"".join(messages)
    if enveloped:
        body = b"BHS|^~\\&\r" + body + f"BTS|{len(messages)}\r".encode()
    batch = split_batch(body)
    assert batch.messages == messages
    assert batch.warnings == []
