"""HL7 acknowledgements (SPEC §4): one ACK per message, in the message's own version and delimiters."""

from __future__ import annotations

import functools
from datetime import datetime

from services.gateway.hl7.header import MessageHeader
from services.gateway.hl7.parse import DEFAULT_ENCODING, Encoding
from services.gateway.issues import ERROR_NAMES, Issue

DEFAULT_VERSION = "2.5.1"



def escape(text: str, enc: Encoding = DEFAULT_ENCODING) -> str:
    """ER7 escaping of one leaf value (delimiters as `\\F\\`…, the escape character as `\\E\\`, each line
    end as `\\.br\\`): one pass over the text, which an ACK does for each of its values."""
    if "\r\n" in text:
        text = text.replace("\r\n", "\n")
    return text.translate(_escapes(enc))


@functools.lru_cache(maxsize=64)
def _escapes(enc: Encoding) -> dict[int, str]:
    e = enc.escape
    table: dict[int, str] = {}
    for char, code in (
        (e, "E"),
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.repetition, "R"),
        (enc.subcomponent, "T"),
        ("\r", ".br"),
        ("\n", ".br"),
    ):
        table.setdefault(ord(char), f"{e}{code}{e}")
    return table


def _version_parts(version: str) -> tuple[int, ...] | None:
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def _timestamp(now: datetime) -> str:
    return now.strftime("%Y%m%d%H%M%S%z")


def _err_v25(issue: Issue, enc: Encoding) -> list[str]:
    c = enc.component
    location = ""
    if issue.segment:
        location = c.join(
            (
                issue.segment,
                str(issue.sequence),
                "" if issue.field is None else str(issue.field),
                "" if issue.repetition is None else str(issue.repetition),
                "" if issue.component is None else str(issue.component),
            )
        ).rstrip(c)
    code = c.join((issue.code, escape(ERROR_NAMES.get(issue.code, ""), enc), "HL70357"))
    return ["ERR", "", location, code, issue.severity, "", "", "", escape(issue.text, enc)]


def _err_v231(issue: Issue, enc: Encoding) -> list[str]:
    c, s = enc.component, enc.subcomponent
    # ERR-1 ELD: segment ^ sequence ^ field ^ CE code as subcomponents; the text must not hold `&`
    text = escape(issue.text, enc)
    code = s.join((issue.code, text, "HL70357"))
    field = "" if issue.field is None else str(issue.field)
    return ["ERR", c.join((issue.segment, str(issue.sequence) if issue.segment else "", field, code))]


def build_ack(
    header: MessageHeader | None, code: str, issues: list[Issue], *, now: datetime, control_id: str
) -> bytes:
    """The ACK of one message. `control_id` is the ACK's own MSH-10; MSA-2 echoes the message's MSH-10."""
    enc = header.encoding if header is not None else DEFAULT_ENCODING
    version = DEFAULT_VERSION
    if header is not None and _version_parts(header.version):
        version = header.version
    parts = _version_parts(version)
    modern = parts is not None and parts >= (2, 5)
    c = enc.component
    if header is not None:
        receiving_app = escape(header.sending_application, enc)
        receiving_facility = escape(header.sending_facility, enc)
        if header.sending_facility_universal_id:
            receiving_facility = c.join(
                (
                    receiving_facility,
                    escape(header.sending_facility_universal_id, enc),
                    escape(header.sending_facility_universal_id_type, enc),
                )
            ).rstrip(c)
        event = escape(header.trigger_event, enc) or "R01"
        processing = escape(header.processing_id, enc) or "P"
        original_id = escape(header.control_id, enc)
    else:
        receiving_app = receiving_facility = original_id = ""
        event, processing = "R01", "P"
    msh = [
        "MSH",
        enc.characters,
        "LABFLOW",
        "LABFLOW",
        receiving_app,
        receiving_facility,
        _timestamp(now),
        "",
        c.join(("ACK", event, "ACK")),
        escape(control_id, enc),
        processing,
        version,
    ]
    msa = ["MSA", code, original_id]
    if not modern:
        first_error = next((issue for issue in issues if issue.is_error), None)
        if first_error is not None:
            msa.append(escape(first_error.text, enc))
    segments = [msh, msa]
    for issue in issues:
        segments.append(_err_v25(issue, enc) if modern else _err_v231(issue, enc))
    fs = enc.field
    text = "".join(fs.join(segment).rstrip(fs) + "\r" for segment in segments)
    charset = header.charset.upper() if header is not None else ""
    if charset.startswith("8859/1"):
        return text.encode("latin-1", "replace")
    return text.encode("utf-8")


def _wanted(mode: str, code: str) -> bool:
    if mode == "NE":
        return False
    if mode == "ER":
        return code != "AA"
    if mode == "SU":
        return code == "AA"
    return True


def ack_wanted(header: MessageHeader | None, code: str) -> bool:
    """Whether MSH-15 / MSH-16 ask for this ACK.

    Our single ACK is both the accept and the application acknowledgement (it is sent once the message
    is durably stored), so it is wanted when either mode asks for it. Both empty = original mode: always.
    An empty mode next to a valued one, or an unknown value, counts as AL.
    """
    if header is None:
        return True
    accept, application = header.accept_ack_type, header.application_ack_type
    if not accept and not application:
        return True
    return _wanted(accept, code) or _wanted(application, code)
