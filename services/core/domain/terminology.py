"""The national terminologies a lab result is read with (SPEC §10): LOINC tests, SNOMED CT outcomes,
local result texts, HL7 result status and administrative sex codes, INS OIDs (pure).

Policy: these tables are the domain's, not a format's. HL7 v2, FHIR and CSV intake all decide a test
kind and an outcome here, so a code accepted over one format is accepted over every other. A local text
(`Positif`, `non détecté`) is matched case-, accent- and punctuation-insensitively: labs write them by
hand in their LIS and spelling varies; a text that matches nothing is refused, never guessed.
"""

from __future__ import annotations

import functools
import unicodedata

from services.core.domain.model import Outcome, ResultStatus, Sex, TestKind

LOINC_KINDS: dict[str, TestKind] = {
    **dict.fromkeys(("94500-6", "94309-2", "94531-1", "94316-7", "94660-8"), TestKind.RT_PCR),
    **dict.fromkeys(("94558-4", "96119-3", "97097-0"), TestKind.ANTIGEN),
    **dict.fromkeys(("94762-2", "94505-5", "94547-7"), TestKind.SEROLOGY),
}
# Ask-at-order-entry questions sent as observations (age, symptoms, onset, hospitalization, pregnancy…):
# not results, never counted
ASK_AT_ORDER_ENTRY_LOINC = frozenset(
    {
        "35659-2",
        "95419-8",
        "65222-2",
        "11368-8",
        "77974-4",
        "95420-6",
        "95417-2",
        "95418-0",
        "95421-4",
        "82810-3",
    }
)

SNOMED_OUTCOMES: dict[str, Outcome] = {
    "260373001": Outcome.POSITIVE,
    "10828004": Outcome.POSITIVE,
    "260415000": Outcome.NEGATIVE,
    "260385009": Outcome.NEGATIVE,
    "419984006": Outcome.INCONCLUSIVE,
    "42425007": Outcome.INCONCLUSIVE,
    "82334004": Outcome.INCONCLUSIVE,
    "455371000124106": Outcome.INVALID,
    "125154007": Outcome.INVALID,
}

_TEXTS: dict[Outcome, tuple[str, ...]] = {
    Outcome.POSITIVE: (
        "POSITIF",
        "POSITIVE",
        "POS",
        "DETECTE",
        "DETECTEE",
        "DETECTED",
        "DETECTABLE",
        "PRESENCE",
        "REACTIF",
        "REACTIVE",
    ),
    Outcome.NEGATIVE: (
        "NEGATIF",
        "NEGATIVE",
        "NEG",
        "NON DETECTE",
        "NON DETECTEE",
        "NOT DETECTED",
        "NON DETECTABLE",
        "INDETECTABLE",
        "UNDETECTED",
        "ABSENCE",
        "NON REACTIF",
        "NON REACTIVE",
    ),
    Outcome.INCONCLUSIVE: (
        "INDETERMINE",
        "INDETERMINEE",
        "INDETERMINATE",
        "DOUTEUX",
        "DOUTEUSE",
        "EQUIVOCAL",
        "EQUIVOQUE",
        "INCONCLUSIVE",
        "INCONCLUANT",
        "NON CONCLUANT",
        "LIMITE",
    ),
    Outcome.INVALID: (
        "INVALIDE",
        "INVALID",
        "NON INTERPRETABLE",
        "ININTERPRETABLE",
        "NON VALIDE",
        "NON CONFORME",
        "ECHANTILLON NON CONFORME",
        "PRELEVEMENT NON CONFORME",
    ),
}
TEXT_OUTCOMES: dict[str, Outcome] = {text: outcome for outcome, texts in _TEXTS.items() for text in texts}

RESULT_STATUSES: dict[str, ResultStatus] = {status.value: status for status in ResultStatus}
"""HL7 table 0085 codes LabFlow carries (F, C, P, X, D, W)."""
ADMINISTRATIVE_SEXES: dict[str, Sex] = {
    "F": Sex.FEMALE,
    "M": Sex.MALE,
    "O": Sex.UNKNOWN,
    "U": Sex.UNKNOWN,
    "A": Sex.UNKNOWN,
    "N": Sex.UNKNOWN,
}
"""HL7 table 0001 → the sex LabFlow keeps (other, ambiguous and not applicable count as unknown)."""

INS_OIDS = frozenset(
    {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
)
"""OIDs of the INS (NIR, NIA and their test ranges): an identifier under one of them is the INS."""
INS_NIR_OID = "1.2.250.1.213.1.4.8"


def _plain_text(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(ch if ch.isalnum() else " " for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(kept.upper().split())


@functools.lru_cache(maxsize=4096)
def outcome_from_text(text: str) -> Outcome | None:
    """Outcome of a local result text, case-, accent- and punctuation-insensitive."""
    outcome = TEXT_OUTCOMES.get(text)
    return outcome if outcome is not None else TEXT_OUTCOMES.get(_plain_text(text))


def outcome_from_value(value: str) -> Outcome | None:
    """Outcome of a SNOMED CT code or a local text."""
    outcome = SNOMED_OUTCOMES.get(value)
    return outcome if outcome is not None else outcome_from_text(value)
