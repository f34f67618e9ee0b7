"""A lab may only send as itself (SPEC §8): the one rule, and the one refusal it makes.

A payload names its sender (MSH-4.1, MSH-4.2 when MSH-4.3 says FINESS, a FHIR performer's
identifiers). The transport authenticated a lab (an HTTP token, an MLLP client certificate), which
has its own identifiers (lab id, FINESS). The payload is from another lab when it names a sender and
none of the names is one of the authenticated lab's: such a payload is refused (AR, ERR 204 at
MSH-4.1), never stored as that other lab's results. A payload that names no sender is not "another
lab": it is refused for the missing MSH-4 instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from services.gateway import issue_catalogue as catalogue
from services.gateway.issues import Issue


def claims_other_lab(own: Iterable[str | None], claimed: Iterable[str | None]) -> bool:
    """Whether a payload naming its sender `claimed` is from a lab other than the one identified
    by `own` (its lab id and FINESS)."""
    named = {c for c in claimed if c}
    return bool(named) and not named.intersection(o for o in own if o)


def not_this_lab(claimed: Iterable[str], lab_id: str) -> Issue:
    """The refusal of a payload whose sender is not the token's lab (ERR 204 at MSH-4.1, AR)."""
    shown = ", ".join(c[:40] for c in claimed)
    return catalogue.SENDER_NOT_TOKEN_LAB.at(
        "MSH", 1, 4, 1, f"sending lab '{shown}' is not the lab of this token '{lab_id}'"
    )
