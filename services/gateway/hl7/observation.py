"""OBX → one observation: the test (LOINC), the result status and the outcome, each checked.

Policy: the test must be a LOINC code LabFlow follows and the status one it carries; the outcome is a
SNOMED CT code or a local text (`services.core.domain.terminology`), read from OBX-5.1, then, for a
coded value, from its text, alternate code and alternate text. A cancelled or deleted result (X, D, W)
may carry no value: its outcome is recorded as invalid and never counted. Ask-at-order-entry questions
are not observations of a result (the caller counts them apart); their codes are in the terminology.

`observation_draft` reads an OBX into the source-neutral `ObservationDraft`; `check_observation` is the
one set of checks every format's observations go through (FHIR and CSV fill the draft themselves).
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from services.core.domain.model import Outcome, ResultStatus, TestKind
from services.core.domain.terminology import LOINC_KINDS, RESULT_STATUSES, outcome_from_value
from services.gateway import issue_catalogue as catalogue
from services.gateway.drafts import ObservationDraft
from services.gateway.hl7.datatypes import read_dtm
from services.gateway.hl7.parse import ReadPlan, Segment
from services.gateway.issues import Issue

_CODED_TYPES = frozenset({"CWE", "CE", "CNE", "CF"})

Observation = tuple[str, TestKind, Outcome, ResultStatus, datetime | None, str | None]
"""LOINC, test kind, outcome, status, observation time (OBX-14), performing lab."""


_OBX_READ = ReadPlan(
    (2, 1), (3, 1), (3, 3), (3, 4), (3, 6), (5, 1), (5, 2), (5, 4), (5, 5),
    (11, 1), (14, 1), (15, 1), (23, 1), (23, 10), (29, 1),
)


def observation_draft(obx: Segment, seq: int) -> ObservationDraft:
    """What one OBX says, unchecked."""
    (
        value_type, code, coding_system, alternate_code, alternate_coding_system, first, text,
        alternate_value, alternate_text, status, observed_at, producer, performer, performer_id, nature,
    ) = obx.read(_OBX_READ)
    loinc = code
    if loinc not in LOINC_KINDS and coding_system != "LN" and alternate_coding_system == "LN":
        loinc = alternate_code  # only the alternate identifier is coded LN
    alternates: tuple[str, ...] = ()
    # a coded value's other components count only when OBX-5.1 is not an outcome itself
    if value_type in _CODED_TYPES and (not first or outcome_from_value(first) is None):
        alternates = (text, alternate_value, alternate_text)
    return ObservationDraft(
        seq,
        loinc,
        nature == "QST",
        status,
        first,
        alternates,
        bool(obx.raw(5)),
        observed_at,
        performer_id or performer or producer or None,
    )


def check_observation(draft: ObservationDraft, zone: tzinfo, issues: list[Issue]) -> Observation | None:
    """The validated content of one result observation, whatever its format; None when invalid (its
    problems appended to `issues`)."""
    seq, loinc = draft.sequence, draft.loinc
    valid = True
    kind = LOINC_KINDS.get(loinc)
    if kind is None:
        valid = False
        if loinc:
            issues.append(
                catalogue.LOINC_UNKNOWN.at("OBX", seq, 3, 1, f"OBX-3: unknown LOINC code {loinc[:20]}")
            )
        else:
            issues.append(
                catalogue.LOINC_MISSING.at("OBX", seq, 3, 1, "OBX-3: observation identifier (LOINC) missing")
            )

    status_code = draft.status
    status = RESULT_STATUSES.get(status_code)
    if status is None:
        valid = False
        if status_code:
            text = f"OBX-11: unsupported result status '{status_code[:5]}' (expected F, C, P, X, D or W)"
            issues.append(catalogue.STATUS_UNSUPPORTED.at("OBX", seq, 11, None, text))
        else:
            issues.append(catalogue.STATUS_MISSING.at("OBX", seq, 11, None, "OBX-11: result status missing"))

    outcome = _outcome(draft, status, issues)
    observed_at = read_dtm(draft.observed_at, "OBX", seq, 14, zone, issues)
    if outcome is None or not valid:
        return None
    assert kind is not None and status is not None  # valid implies both
    return loinc, kind, outcome, status, observed_at, draft.performing_lab


def _outcome(draft: ObservationDraft, status: ResultStatus | None, issues: list[Issue]) -> Outcome | None:
    seq, first = draft.sequence, draft.value
    if first:
        outcome = outcome_from_value(first)
        if outcome is not None:
            return outcome
    for value in draft.alternates:
        if value:
            outcome = outcome_from_value(value)
            if outcome is not None:
                return outcome
    if not draft.value_sent:
        if status is not None and status.retracts:
            # a cancelled/deleted result carries no value; its outcome is never counted
            return Outcome.INVALID
        issues.append(catalogue.RESULT_VALUE_MISSING.at("OBX", seq, 5, None, "OBX-5: result value missing"))
        return None
    second = draft.alternates[0] if draft.alternates else ""
    shown = " ".join(filter(None, (first, second)))[:60]
    issues.append(
        catalogue.RESULT_VALUE_UNINTERPRETABLE.at(
            "OBX", seq, 5, None, f"OBX-5: result value '{shown}' cannot be interpreted"
        )
    )
    return None
