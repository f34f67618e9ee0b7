"""Every problem the gateway can report to a lab, defined once (the issue catalogue).

Each `IssueKind` fixes the HL7 table 0357 code, the severity, whether the message is rejected (AR,
must fix) rather than errored (AE), what causes it and how to fix it. The HL7 normalizer, the FHIR and
CSV readers and the intake make their issues from these entries, so the hint a lab reads in an HTTP
answer or a validation report is the one documented here. `docs/errors.md` is generated from this
module (`python -m services.gateway.issue_catalogue > docs/errors.md`), and the lab portal's French hints
from each kind's `hint_fr` (`… --portal-hints > services/dashboard/static/hints.fr.json`); unit tests
keep both equal to their generator.

Texts and examples never contain identifying data (name, INS, birth date, address, phone).
"""

from __future__ import annotations

import json
import sys

from services.gateway.issues import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    ERROR_NAMES,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY_IDENTIFIER,
    UNSUPPORTED_EVENT_CODE,
    UNSUPPORTED_MESSAGE_TYPE,
    UNSUPPORTED_VERSION_ID,
    IssueKind,
)

E, W = "E", "W"

# -- the message as a whole -------------------------------------------------------------------------
NOT_HL7 = IssueKind(
    "NOT_HL7", SEGMENT_SEQUENCE_ERROR, E,
    "The payload is not an HL7 v2 ER7 message: empty, not starting with MSH, an unusable field separator "
    "(MSH-1), or a segment name that is not three letters or digits.",
    "Send one ORU^R01 message per frame, starting with the MSH segment, segments separated by CR.",
    "not an HL7 v2 message: it does not start with an MSH segment",
    reject=True,
    hint_fr="Envoyez un message ORU^R01 par trame, commençant par le segment MSH, segments séparés par CR.",
)
BAD_DELIMITERS = IssueKind(
    "BAD_DELIMITERS", DATA_TYPE_ERROR, E,
    "MSH-2 does not declare usable encoding characters (letters, digits, spaces or control characters).",
    "Use the standard delimiters: `MSH|^~\\&`.",
    "MSH-2: invalid encoding characters",
    reject=True,
    hint_fr="Utilisez les délimiteurs standard : `MSH|^~\\&`.",
)
UNSUPPORTED_TYPE = IssueKind(
    "UNSUPPORTED_MESSAGE_TYPE", UNSUPPORTED_MESSAGE_TYPE, E,
    "MSH-9.1 is not ORU: LabFlow only receives observation results.",
    "Send results as ORU^R01; orders, ADT and queries are not accepted.",
    "MSH-9: unsupported message type 'ADT^A01' (only ORU^R01)",
    reject=True,
    hint_fr="Envoyez les résultats en ORU^R01 ; les demandes, ADT et requêtes ne sont pas acceptées.",
)
UNSUPPORTED_EVENT = IssueKind(
    "UNSUPPORTED_TRIGGER_EVENT", UNSUPPORTED_EVENT_CODE, E,
    "MSH-9.2 is not R01.",
    "Send unsolicited results as ORU^R01.",
    "MSH-9: unsupported trigger event 'R30' (only ORU^R01)",
    reject=True,
    hint_fr="Envoyez les résultats non sollicités en ORU^R01.",
)
UNSUPPORTED_VERSION = IssueKind(
    "UNSUPPORTED_VERSION", UNSUPPORTED_VERSION_ID, E,
    "MSH-12 names an HL7 version LabFlow does not read.",
    "Send HL7 v2.3.1, v2.5 or v2.5.1 (v2.5.1 recommended).",
    "MSH-12: unsupported version '2.7' (2.3.1, 2.5 or 2.5.1)",
    reject=True,
    hint_fr="Envoyez en HL7 v2.3.1, v2.5 ou v2.5.1 (v2.5.1 recommandée).",
)
NOT_AUTHENTICATED_LAB = IssueKind(
    "NOT_AUTHENTICATED_LAB", UNKNOWN_KEY_IDENTIFIER, E,
    "MSH-4 (or the FHIR performer) names a lab other than the one of the certificate or token used: a "
    "lab may only send as itself.",
    "Put your own lab id (or FINESS) in MSH-4, or use the credentials of the lab you send for.",
    "MSH-4: sending facility 'LAB-A' is not the authenticated lab 'LAB-B'",
    reject=True,
    hint_fr=(
        "Indiquez votre propre identifiant de laboratoire (ou FINESS) en MSH-4, ou utilisez les identifiants "
        "du laboratoire pour lequel vous envoyez."
    ),
)
UNREGISTERED_LAB = IssueKind(
    "UNREGISTERED_LAB", UNKNOWN_KEY_IDENTIFIER, E,
    "The sending facility is not in the lab registry, or is disabled there.",
    "Ask the LabFlow operators to register (or re-enable) your lab before sending.",
    "MSH-4: sending facility 'LAB-X' is not a registered lab; ask the LabFlow operators to register it",
    reject=True,
    hint_fr=(
        "Demandez aux opérateurs de LabFlow d'enregistrer (ou de réactiver) votre laboratoire avant "
        "d'envoyer."
    ),
)
CONTROL_ID_MISSING = IssueKind(
    "CONTROL_ID_MISSING", REQUIRED_FIELD_MISSING, E,
    "MSH-10 (FHIR: Bundle.identifier.value or Bundle.id) is empty; the ACK could not be matched.",
    "Give every message a unique control id.",
    "MSH-10: message control id missing",
    hint_fr="Donnez à chaque message un identifiant de contrôle unique.",
)
SENDING_FACILITY_MISSING = IssueKind(
    "SENDING_FACILITY_MISSING", REQUIRED_FIELD_MISSING, E,
    "MSH-4 is empty: the results cannot be attributed to a lab.",
    "Put your lab id in MSH-4.1 (and your FINESS in MSH-4.2 with MSH-4.3 = FINESS).",
    "MSH-4: sending facility missing",
    hint_fr=(
        "Indiquez l'identifiant de votre laboratoire en MSH-4.1 (et votre FINESS en MSH-4.2 avec MSH-4.3 = "
        "FINESS)."
    ),
)
CONTENT_NOT_STORABLE = IssueKind(
    "CONTENT_NOT_STORABLE", DATA_TYPE_ERROR, E,
    "A value cannot be stored as sent: bytes not valid in the declared character set (MSH-18), a "
    "control character, a lone surrogate, or a value longer than LabFlow stores.",
    "Declare the character set you really send in MSH-18 (UNICODE UTF-8 recommended), remove control "
    "characters, and shorten the value.",
    "PID-5.1: control character U+0007 at character 3 is not allowed",
    hint_fr=(
        "Déclarez en MSH-18 le jeu de caractères réellement envoyé (UNICODE UTF-8 recommandé), retirez les "
        "caractères de contrôle et raccourcissez la valeur."
    ),
)
RECORD_TOO_LARGE = IssueKind(
    "MESSAGE_TOO_LARGE", APPLICATION_INTERNAL_ERROR, E,
    "The message (or the record made from it) is larger than the gateway accepts.",
    "Split the results into several smaller messages.",
    "message of 2000000 bytes exceeds the 1048576-byte limit",
    reject=True,
    hint_fr="Répartissez les résultats dans plusieurs messages plus petits.",
)
TEMPORARILY_UNAVAILABLE = IssueKind(
    "TEMPORARILY_UNAVAILABLE", APPLICATION_INTERNAL_ERROR, E,
    "The gateway could not store the message durably right now (message bus or lab registry "
    "unavailable, or an internal failure, which is logged).",
    "Send the same message again later: a re-send is idempotent.",
    "the result could not be stored durably right now (message bus unavailable); send it again",
    hint_fr="Renvoyez le même message plus tard : un renvoi est idempotent.",
)
BODY_UNREADABLE = IssueKind(
    "BODY_UNREADABLE", DATA_TYPE_ERROR, E,
    "An HTTP body that cannot be read at all: not JSON, not a FHIR Bundle, a CSV without its header or "
    "not UTF-8.",
    "Check the Content-Type and the format described in the README (HTTP intake).",
    "the CSV is not UTF-8: byte 0xE9 in the header line (character 12)",
    reject=True,
    hint_fr="Vérifiez le Content-Type et le format décrits dans le README (dépôt HTTP).",
)

# -- structure --------------------------------------------------------------------------------------
OBX_WITHOUT_OBR = IssueKind(
    "OBX_WITHOUT_OBR", SEGMENT_SEQUENCE_ERROR, E,
    "An OBX comes before any OBR: it belongs to no order.",
    "Send PID, then ORC/OBR, then the OBXs (and SPM) of that order.",
    "OBX without a preceding OBR",
    hint_fr="Envoyez le PID, puis ORC/OBR, puis les OBX (et le SPM) de cette demande.",
)
OBR_WITHOUT_PID = IssueKind(
    "OBR_WITHOUT_PID", SEGMENT_SEQUENCE_ERROR, E,
    "An OBR comes before any PID: the order belongs to no patient.",
    "Send the PID segment before the orders of that patient.",
    "OBR without a preceding PID",
    hint_fr="Envoyez le segment PID avant les demandes de ce patient.",
)
NO_RESULT = IssueKind(
    "NO_RESULT", REQUIRED_FIELD_MISSING, E,
    "The message carries no result observation (only questions, or no OBX at all).",
    "Send at least one OBX with a LOINC test code and a result value.",
    "message has no result (OBX)",
    hint_fr="Envoyez au moins un OBX avec un code d'analyse LOINC et une valeur de résultat.",
)

# -- data types -------------------------------------------------------------------------------------
TIME_INVALID = IssueKind(
    "TIME_INVALID", DATA_TYPE_ERROR, E,
    "A date/time is not HL7 DTM (YYYY[MM[DD[HH[MM[SS[.S]]]]]][+/-ZZZZ]) or ISO 8601, or is out of range.",
    "Write times as 20240110081500+0100 (HL7) or 2024-01-10T08:15:00+01:00 (FHIR, CSV); without an "
    "offset, the lab's time zone is assumed.",
    "SPM-17: invalid date/time",
    hint_fr=(
        "Écrivez les dates-heures ainsi : 20240110081500+0100 (HL7) ou 2024-01-10T08:15:00+01:00 (FHIR, CSV) "
        "; sans décalage, le fuseau horaire du laboratoire est appliqué."
    ),
)

# -- patient ----------------------------------------------------------------------------------------
INS_INVALID = IssueKind(
    "INS_INVALID", DATA_TYPE_ERROR, E,
    "The INS (PID-3 under an INS OID or type INS/NH) is not a valid NIR/NIA: wrong length, characters "
    "or control key.",
    "Send the 15-character matricule (13 digits + 2-digit key, 2A/2B for Corsica) as read from INSi.",
    "PID-3: INS key 12 does not match matricule (expected 89)",
    hint_fr=(
        "Envoyez le matricule de 15 caractères (13 chiffres + clé de 2 chiffres, 2A/2B pour la Corse) tel que"
        " lu par INSi."
    ),
)
BIRTH_DATE_INVALID = IssueKind(
    "BIRTH_DATE_INVALID", DATA_TYPE_ERROR, E,
    "PID-7 is not a date.", "Write the birth date as YYYYMMDD.", "PID-7: invalid birth date",
    hint_fr="Écrivez la date de naissance sous la forme AAAAMMJJ.",
)
BIRTH_DATE_IN_FUTURE = IssueKind(
    "BIRTH_DATE_IN_FUTURE", DATA_TYPE_ERROR, E,
    "PID-7 is after today.", "Check the birth date (day and month order, century).",
    "PID-7: birth date is in the future",
    hint_fr="Vérifiez la date de naissance (ordre du jour et du mois, siècle).",
)
BIRTH_DATE_TOO_OLD = IssueKind(
    "BIRTH_DATE_TOO_OLD", DATA_TYPE_ERROR, E,
    "PID-7 is more than 120 years ago.", "Check the birth date (century).",
    "PID-7: birth date is more than 120 years ago",
    hint_fr="Vérifiez la date de naissance (siècle).",
)
SEX_UNKNOWN = IssueKind(
    "SEX_UNKNOWN", TABLE_VALUE_NOT_FOUND, E,
    "PID-8 is not a code of HL7 table 0001.", "Use F, M, O, U, A or N (or leave it empty).",
    "PID-8: unknown administrative sex code 'X' (expected F, M, O, U, A or N)",
    hint_fr="Utilisez F, M, O, U, A ou N (ou laissez vide).",
)
BIRTH_NAME_MISSING = IssueKind(
    "BIRTH_NAME_MISSING", REQUIRED_FIELD_MISSING, E,
    "No INS and no birth name (PID-5.1 of the legal name): the patient cannot be pseudonymized.",
    "Send the INS, or the birth name, first given name, birth date and sex.",
    "PID-5: birth name required when no INS is sent",
    hint_fr="Envoyez l'INS, ou le nom de naissance, le premier prénom, la date de naissance et le sexe.",
)
GIVEN_NAME_MISSING = IssueKind(
    "GIVEN_NAME_MISSING", REQUIRED_FIELD_MISSING, E,
    "No INS and no given name (PID-5.2): the patient cannot be pseudonymized.",
    "Send the INS, or the birth name, first given name, birth date and sex.",
    "PID-5: given name required when no INS is sent",
    hint_fr="Envoyez l'INS, ou le nom de naissance, le premier prénom, la date de naissance et le sexe.",
)
BIRTH_DATE_MISSING = IssueKind(
    "BIRTH_DATE_MISSING", REQUIRED_FIELD_MISSING, E,
    "No INS and no birth date (PID-7): the patient cannot be pseudonymized.",
    "Send the INS, or the birth name, first given name, birth date and sex.",
    "PID-7: birth date required when no INS is sent",
    hint_fr="Envoyez l'INS, ou le nom de naissance, le premier prénom, la date de naissance et le sexe.",
)

# -- order and specimen -----------------------------------------------------------------------------
COLLECTION_TIME_MISSING = IssueKind(
    "COLLECTION_TIME_MISSING", REQUIRED_FIELD_MISSING, E,
    "Neither SPM-17 nor OBR-7 gives the specimen collection time: the result has no day.",
    "Send the collection time in SPM-17 (v2.5.1) or OBR-7.",
    "OBR-7: specimen collection time missing",
    hint_fr="Envoyez la date-heure de prélèvement en SPM-17 (v2.5.1) ou OBR-7.",
)
COLLECTION_TIME_IN_FUTURE = IssueKind(
    "COLLECTION_TIME_IN_FUTURE", DATA_TYPE_ERROR, E,
    "The collection time is more than 5 minutes after the gateway's clock.",
    "Check the time and its offset (a local time without offset is read in the lab's time zone).",
    "SPM-17: specimen collection time is in the future",
    hint_fr=(
        "Vérifiez l'heure et son décalage (une heure locale sans décalage est lue dans le fuseau horaire du "
        "laboratoire)."
    ),
)
COLLECTED_AFTER_RESULT = IssueKind(
    "COLLECTED_AFTER_RESULT", DATA_TYPE_ERROR, E,
    "The specimen was collected more than 5 minutes after the result time (OBR-22).",
    "Check both times and their offsets.",
    "SPM-17: specimen collection time is after the result time (OBR-22)",
    hint_fr="Vérifiez les deux dates-heures et leurs décalages.",
)
RESULT_TIME_IN_FUTURE = IssueKind(
    "RESULT_TIME_IN_FUTURE", DATA_TYPE_ERROR, E,
    "OBR-22 is more than 5 minutes after the gateway's clock.",
    "Check the time and its offset.",
    "OBR-22: result time is in the future",
    hint_fr="Vérifiez l'heure et son décalage.",
)
SPECIMEN_ID_MISSING = IssueKind(
    "SPECIMEN_ID_MISSING", REQUIRED_FIELD_MISSING, E,
    "Neither SPM-2 nor OBR-3 (or OBR-2) identifies the specimen: the result has no stable id, and a "
    "re-send would count twice.",
    "Send the specimen id in SPM-2, or the filler order number in OBR-3.",
    "OBR-3: filler order number missing (and no SPM-2)",
    hint_fr=(
        "Envoyez l'identifiant de l'échantillon en SPM-2, ou le numéro de demande du laboratoire en OBR-3."
    ),
)

# -- observation ------------------------------------------------------------------------------------
LOINC_UNKNOWN = IssueKind(
    "LOINC_UNKNOWN", TABLE_VALUE_NOT_FOUND, E,
    "OBX-3 is not a LOINC code of a test LabFlow follows (SPEC §10).",
    "Use the LOINC code of the test (e.g. 94500-6 RT-PCR, 94558-4 antigen) with coding system LN.",
    "OBX-3: unknown LOINC code 12345-6",
    hint_fr=(
        "Utilisez le code LOINC de l'analyse (par ex. 94500-6 RT-PCR, 94558-4 antigénique) avec le système de"
        " codage LN."
    ),
)
LOINC_MISSING = IssueKind(
    "LOINC_MISSING", REQUIRED_FIELD_MISSING, E,
    "OBX-3 is empty.", "Send the LOINC code of the test in OBX-3.1 (OBX-3.3 = LN).",
    "OBX-3: observation identifier (LOINC) missing",
    hint_fr="Envoyez le code LOINC de l'analyse en OBX-3.1 (OBX-3.3 = LN).",
)
STATUS_UNSUPPORTED = IssueKind(
    "STATUS_UNSUPPORTED", TABLE_VALUE_NOT_FOUND, E,
    "OBX-11 is not a result status LabFlow carries.",
    "Use F (final), C (corrected), P (preliminary), X, D or W.",
    "OBX-11: unsupported result status 'R' (expected F, C, P, X, D or W)",
    hint_fr="Utilisez F (final), C (corrigé), P (préliminaire), X, D ou W.",
)
STATUS_MISSING = IssueKind(
    "STATUS_MISSING", REQUIRED_FIELD_MISSING, E,
    "OBX-11 is empty.", "Send the result status (F for a final result).", "OBX-11: result status missing",
    hint_fr="Envoyez le statut du résultat (F pour un résultat final).",
)
RESULT_VALUE_MISSING = IssueKind(
    "RESULT_VALUE_MISSING", REQUIRED_FIELD_MISSING, E,
    "OBX-5 is empty on a result that is not cancelled or deleted.",
    "Send the result as a SNOMED CT code (e.g. 260373001 detected) or a text such as POSITIF.",
    "OBX-5: result value missing",
    hint_fr=(
        "Envoyez le résultat sous forme de code SNOMED CT (par ex. 260373001 détecté) ou d'un texte tel que "
        "POSITIF."
    ),
)
RESULT_VALUE_UNINTERPRETABLE = IssueKind(
    "RESULT_VALUE_UNINTERPRETABLE", TABLE_VALUE_NOT_FOUND, E,
    "OBX-5 is neither a SNOMED CT outcome code nor a known result text.",
    "Send a SNOMED CT code (260373001, 260415000, 419984006…) or POSITIF / NEGATIF / INDETERMINE / "
    "INVALIDE.",
    "OBX-5: result value 'A REVOIR' cannot be interpreted",
    hint_fr=(
        "Envoyez un code SNOMED CT (260373001, 260415000, 419984006…) ou POSITIF / NEGATIF / INDETERMINE / "
        "INVALIDE."
    ),
)

# -- FHIR and CSV -----------------------------------------------------------------------------------
FHIR_ENTRY_WITHOUT_RESOURCE = IssueKind(
    "FHIR_ENTRY_WITHOUT_RESOURCE", REQUIRED_FIELD_MISSING, E,
    "A Bundle entry has no resource, or a resource without resourceType.",
    "Give every entry a resource with its resourceType.",
    "Bundle.entry[3].resource: entry without a resource (or without resourceType)",
    hint_fr="Donnez à chaque entrée une ressource avec son resourceType.",
)
FHIR_REFERENCE_MISSING = IssueKind(
    "FHIR_REFERENCE_MISSING", REQUIRED_FIELD_MISSING, E,
    "A DiagnosticReport's subject, specimen or result has no reference.",
    "Reference the Patient, Specimen and Observations of the Bundle (fullUrl or Type/id).",
    "Bundle.entry[0].resource.subject: reference to a Patient missing",
    hint_fr="Référencez le Patient, le Specimen et les Observations du Bundle (fullUrl ou Type/id).",
)
FHIR_REFERENCE_NOT_IN_BUNDLE = IssueKind(
    "FHIR_REFERENCE_NOT_IN_BUNDLE", REQUIRED_FIELD_MISSING, E,
    "A reference points to no resource of the Bundle, or to one of another type.",
    "Send the referenced resource in the same Bundle (LabFlow does not fetch resources).",
    "Bundle.entry[0].resource.subject: the referenced Patient is not in the Bundle",
    hint_fr="Envoyez la ressource référencée dans le même Bundle (LabFlow ne va pas chercher de ressources).",
)
FHIR_NO_REPORT = IssueKind(
    "FHIR_NO_REPORT", REQUIRED_FIELD_MISSING, E,
    "The Bundle has no DiagnosticReport: its Observations belong to no report.",
    "Send one DiagnosticReport per specimen, listing its Observations in `result`.",
    "Bundle.entry: the Bundle has no DiagnosticReport",
    hint_fr="Envoyez un DiagnosticReport par échantillon, listant ses Observations dans `result`.",
)
FHIR_REPORT_WITHOUT_OBSERVATION = IssueKind(
    "FHIR_REPORT_WITHOUT_OBSERVATION", REQUIRED_FIELD_MISSING, E,
    "A DiagnosticReport lists no Observation in `result`.",
    "List the report's Observations in DiagnosticReport.result.",
    "Bundle.entry[0].resource.result: the DiagnosticReport lists no Observation",
    hint_fr="Listez les Observations du compte rendu dans DiagnosticReport.result.",
)
FHIR_OBSERVATION_NOT_LISTED = IssueKind(
    "FHIR_OBSERVATION_NOT_LISTED", REQUIRED_FIELD_MISSING, W,
    "An Observation of the Bundle is listed in no DiagnosticReport.result: it is not read.",
    "List it in its DiagnosticReport's `result`, or leave it out of the Bundle.",
    "Bundle.entry[4].resource: Observation not listed in any DiagnosticReport.result: not read",
    hint_fr="Listez-la dans le `result` de son DiagnosticReport, ou retirez-la du Bundle.",
)
SENDER_NOT_TOKEN_LAB = IssueKind(
    "SENDER_NOT_TOKEN_LAB", UNKNOWN_KEY_IDENTIFIER, E,
    "The payload names a sending lab (MSH-4, DiagnosticReport.performer) other than the token's lab.",
    "Send with the token of the lab named in the payload.",
    "sending lab 'LAB-A' is not the lab of this token 'LAB-B'",
    reject=True,
    hint_fr="Envoyez avec le jeton du laboratoire nommé dans le contenu.",
)
CSV_FIELD_COUNT = IssueKind(
    "CSV_FIELD_COUNT", DATA_TYPE_ERROR, E,
    "A CSV row has more or fewer fields than the header.",
    "Quote values that contain the delimiter; give every row as many fields as the header.",
    "row 3: 5 fields, the header has 4",
    hint_fr=(
        "Mettez entre guillemets les valeurs qui contiennent le délimiteur ; donnez à chaque ligne autant de "
        "champs que l'en-tête."
    ),
)

CATALOGUE: tuple[IssueKind, ...] = tuple(v for v in list(globals().values()) if isinstance(v, IssueKind))
"""Every kind, in definition order (the order of `docs/errors.md`)."""


def render_markdown() -> str:
    """`docs/errors.md`: one section per issue kind."""
    lines = [
        "# Errors a lab can get back",
        "",
        "<!-- generated by `python -m services.gateway.issue_catalogue > docs/errors.md`: do not edit -->",
        "",
        "Every problem the gateway reports, with its HL7 table 0357 code (ERR-3 of the ACK), its severity "
        "and the answer it gives: **AR** (rejected: fix before sending again), **AE** (error: fix and send "
        "again; a re-send of the same message is idempotent) or a warning (the message is accepted).",
        "",
        "| id | HL7 0357 | answer |",
        "|---|---|---|",
    ]
    for kind in CATALOGUE:
        answer = "warning" if kind.severity == W else ("AR" if kind.reject else "AE")
        lines.append(f"| [{kind.id}](#{kind.id.lower()}) | {kind.code} {ERROR_NAMES[kind.code]} | {answer} |")
    for kind in CATALOGUE:
        lines += [
            "",
            f"## {kind.id}",
            "",
            f"- Code: {kind.code} ({ERROR_NAMES[kind.code]}), severity {kind.severity}"
            + (", message rejected (AR)" if kind.reject else ""),
            f"- Cause: {kind.cause}",
            f"- Fix: {kind.hint}",
            f"- Example: `{kind.example}`",
        ]
    return "\n".join(lines) + "\n"


def render_portal_hints() -> str:
    """`services/dashboard/static/hints.fr.json`: the French hint of each kind, by id, for the lab portal
    (a rejection carries its kind's id and English hint; the dashboard cannot import the gateway)."""
    return json.dumps({kind.id: kind.hint_fr for kind in CATALOGUE}, ensure_ascii=False, indent=1) + "\n"


if __name__ == "__main__":
    # python -m services.gateway.issue_catalogue [--portal-hints]
    sys.stdout.write(render_portal_hints() if sys.argv[1:] == ["--portal-hints"] else render_markdown())
