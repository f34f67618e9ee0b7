"""A problem found in what a lab sent (`Issue`), and the kind of problem it is (`IssueKind`).

An `Issue` is located the HL7 way (segment, occurrence, field, component, repetition: one ERR segment
of the ACK); problems found in FHIR or CSV terms carry no segment and are located by their reader.
Every `Issue` is made from an `IssueKind` of the catalogue (`issue_catalogue`), which fixes its HL7
table 0357 code, severity, whether it rejects the message (AR) and the hint shown to the lab: the code
of a problem is decided once, where the problem is defined, never at the place it is found. `hint` and
`kind` do not take part in equality: two issues at the same place with the same text are the same
issue.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# HL7 table 0357 (message error condition codes)
SEGMENT_SEQUENCE_ERROR = "100"
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
TABLE_VALUE_NOT_FOUND = "103"
UNSUPPORTED_MESSAGE_TYPE = "200"
UNSUPPORTED_EVENT_CODE = "201"
UNSUPPORTED_VERSION_ID = "203"
UNKNOWN_KEY_IDENTIFIER = "204"
APPLICATION_INTERNAL_ERROR = "207"

ERROR_NAMES = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}
"""HL7 table 0357 names (ERR-3.2 / ERR-1.4.2 of the ACK)."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem, reported as one ERR segment of the ACK."""

    segment: str
    sequence: int
    """Occurrence of the segment in the message, 1-based (0 when not tied to a segment)."""
    field: int | None
    component: int | None
    code: str
    """HL7 table 0357."""
    severity: str
    """HL7 table 0516 (v2.5): E error, W warning. Rejections are E too, with `reject` set."""
    text: str
    reject: bool = False
    repetition: int | None = None
    """Field repetition, 1-based, where known (ERR-2.4)."""
    hint: str = dataclasses.field(default="", compare=False)
    """How the lab fixes it (from the catalogue)."""
    kind: str = dataclasses.field(default="", compare=False)
    """The catalogue id of the problem (`IssueKind.id`), stable across releases."""

    @property
    def is_error(self) -> bool:
        return self.severity != "W"

    @classmethod
    def about_message(cls, code: str, text: str, *, reject: bool = False) -> Issue:
        """An error about the message as a whole (located at its MSH segment)."""
        return cls("MSH", 1, None, None, code, "E", text, reject)


@dataclass(frozen=True, slots=True)
class IssueKind:
    """One entry of the issue catalogue: what a problem is, what causes it and how a lab fixes it."""

    id: str
    """Stable identifier (upper snake case): documentation anchors and reports refer to it."""
    code: str
    """HL7 table 0357."""
    severity: str
    """E (error: the message is not stored) or W (warning: stored anyway)."""
    cause: str
    hint: str
    example: str
    """A text the lab may see (its variable parts filled in)."""
    reject: bool = False
    """AR (must fix, not retryable) rather than AE."""
    hint_fr: str = ""
    """The hint in French, for the lab portal (every kind has one: a unit test checks it)."""

    def at(
        self,
        segment: str,
        sequence: int,
        field: int | None,
        component: int | None,
        text: str,
        repetition: int | None = None,
    ) -> Issue:
        """This problem at an HL7 location."""
        return Issue(
            segment,
            sequence,
            field,
            component,
            self.code,
            self.severity,
            text,
            self.reject,
            repetition,
            self.hint,
            self.id,
        )

    def about_message(self, text: str) -> Issue:
        """This problem about the message as a whole (located at its MSH segment)."""
        return self.at("MSH", 1, None, None, text)

    def unlocated(self, text: str) -> Issue:
        """This problem with no HL7 location (found in FHIR or CSV terms, located by the reader)."""
        return self.at("", 0, None, None, text)
