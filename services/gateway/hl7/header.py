"""MSH: what the gateway and the ACK need from a message's header, and what makes us refuse it (AR).

Rejections are for what is not ours to read (SPEC §4, §9.1): not ORU^R01, an unsupported version, or a
sending facility other than the authenticated lab. They are decided from MSH alone, before anything
else of the message is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway import issue_catalogue as catalogue
from services.gateway.hl7.parse import Encoding, ParseError, ReadPlan, Segment, parse_message
from services.gateway.issues import Issue
from services.gateway.sender import claims_other_lab

SUPPORTED_VERSIONS = frozenset({"2.3.1", "2.5", "2.5.1"})
_FINESS_TYPE = "FINESS"


@dataclass(slots=True)
class MessageHeader:
    """What the gateway and the ACK need from MSH. Never changed once read; not a frozen dataclass
    only because it is built for every message (the hot path) and a frozen one costs about a
    microsecond more to build."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    """MSH-4.1 namespace id (MSH-4.2 when 4.1 is empty): the lab id."""
    sending_facility_universal_id: str
    sending_facility_universal_id_type: str
    lab_finess: str | None
    """MSH-4.2 when MSH-4.3 says `FINESS`."""
    receiving_application: str
    receiving_facility: str
    message_type: str
    trigger_event: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    charset: str

    @property
    def encoding(self) -> Encoding:
        chars = self.encoding_characters
        return Encoding(self.field_separator, chars[0], chars[1], chars[2], chars[3])


_MSH_READ = ReadPlan(
    (3, 1), (4, 1), (4, 2), (4, 3), (5, 1), (6, 1), (9, 1), (9, 2),
    (10, 1), (11, 1), (12, 1), (15, 1), (16, 1),
)


def read_header(msh: Segment, charset: str) -> MessageHeader:
    (
        application, namespace, universal_id, universal_id_type, receiving_application,
        receiving_facility, message_type, trigger_event, control_id, processing_id, version,
        accept_ack_type, application_ack_type,
    ) = msh.read(_MSH_READ)
    finess = universal_id if universal_id and universal_id_type.upper() == _FINESS_TYPE else None
    return MessageHeader(
        field_separator=msh.raw(1),
        encoding_characters=msh.raw(2)[:4],
        sending_application=application,
        sending_facility=namespace or universal_id,
        sending_facility_universal_id=universal_id,
        sending_facility_universal_id_type=universal_id_type,
        lab_finess=finess,
        receiving_application=receiving_application,
        receiving_facility=receiving_facility,
        message_type=message_type,
        trigger_event=trigger_event,
        control_id=control_id,
        processing_id=processing_id,
        version=version,
        accept_ack_type=accept_ack_type,
        application_ack_type=application_ack_type,
        charset=charset,
    )


def normalize_header(raw: bytes | str) -> MessageHeader | None:
    """The MSH of a message, from its first bytes alone (e.g. an oversized frame); None if not HL7."""
    text = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else raw
    text = text.lstrip("\ufeff \t\r\n")
    end = min((i for i in (text.find("\r"), text.find("\n")) if i >= 0), default=len(text))
    try:
        message = parse_message(text[:end])
    except ParseError:
        return None
    return read_header(message.msh, message.charset)


def rejection(header: MessageHeader, authenticated_lab: str | None) -> Issue | None:
    """Why the message is refused from its header alone (AR), or None."""
    if header.message_type != "ORU":
        shown = f"{header.message_type}^{header.trigger_event}"[:20]
        return catalogue.UNSUPPORTED_TYPE.at(
            "MSH", 1, 9, 1, f"MSH-9: unsupported message type '{shown}' (only ORU^R01)"
        )
    if header.trigger_event != "R01":
        return catalogue.UNSUPPORTED_EVENT.at(
            "MSH", 1, 9, 2, f"MSH-9: unsupported trigger event '{header.trigger_event[:10]}' (only ORU^R01)"
        )
    if header.version not in SUPPORTED_VERSIONS:
        return catalogue.UNSUPPORTED_VERSION.at(
            "MSH", 1, 12, None, f"MSH-12: unsupported version '{header.version[:10]}' (2.3.1, 2.5 or 2.5.1)"
        )
    if authenticated_lab is not None and (
        not header.sending_facility
        or claims_other_lab((authenticated_lab,), (header.sending_facility, header.lab_finess))
    ):
        return catalogue.NOT_AUTHENTICATED_LAB.at(
            "MSH",
            1,
            4,
            1,
            f"MSH-4: sending facility '{header.sending_facility[:40]}' is not the authenticated lab "
            f"'{authenticated_lab[:40]}'",
        )
    return None
