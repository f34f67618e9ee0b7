"""SPEC §8.1: an HL7 time without an offset is the sending lab's local time; the collection day is the
residence department's."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from nacl.public import PrivateKey

from services.core.domain.geography import department_time_zone
from services.core.domain.model import LabResult, Transport
from services.gateway.hl7.normalize import normalize_oru
from services.gateway.identity import IdentityProtector

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7"
NOW = datetime(2022, 1, 20, tzinfo=UTC)
PROTECTOR = IdentityProtector(b"0123456789abcdef0123456789abcdef", bytes(PrivateKey.generate().public_key))


def reunion_message() -> bytes:
    """A Réunion lab's ORU^R01 for a patient living in Saint-Denis (974): local times, no offsets."""
    raw = (FIXTURES / "ok_v251.hl7").read_bytes()
    for old, new in (
        (b"20240115080000+0100", b"20220115233000"),  # collected at 23:30, Réunion time
        (b"20240115100000+0100", b"20220116080000"),
        (b"20000^FRA", b"97400^FRA"),
    ):
        raw = raw.replace(old, new)
    return raw


def result(**kwargs: object) -> LabResult:
    normalized = normalize_oru(
        reunion_message(), received_at=NOW, transport=Transport.MLLP, protector=PROTECTOR, now=NOW,
        **kwargs,  # type: ignore[arg-type]
    )
    assert normalized.ack_code == "AA", normalized.issues
    (first,) = normalized.results
    return first


def test_a_reunion_lab_time_is_read_in_reunion_time() -> None:
    collected = result(lab_time_zone=department_time_zone("974"))

    assert collected.department == "974"
    assert collected.collected_at == datetime(2022, 1, 15, 19, 30, tzinfo=UTC)
    assert collected.result_at == datetime(2022, 1, 16, 4, 0, tzinfo=UTC)
    assert collected.collection_day == date(2022, 1, 15)


def test_without_a_lab_zone_a_time_is_read_in_paris_time() -> None:
    collected = result()

    # 23:30 in Paris is 02:30 the next day in Réunion: the wrong collection day the lab zone avoids
    assert collected.collected_at == datetime(2022, 1, 15, 22, 30, tzinfo=UTC)
    assert collected.collection_day == date(2022, 1, 16)


def test_a_time_with_an_offset_ignores_the_lab_zone() -> None:
    raw = reunion_message().replace(b"20220115233000", b"20220115233000+0400")
    normalized = normalize_oru(
        raw, received_at=NOW, transport=Transport.MLLP, protector=PROTECTOR, now=NOW,
        lab_time_zone=department_time_zone("971"),
    )
    assert normalized.results[0].collected_at == datetime(2022, 1, 15, 19, 30, tzinfo=UTC)
