"""FHIR answers: the HTTP intake's answer to a FHIR submission, as a FHIR R4 `OperationOutcome`.

A FHIR client asks for it with `Accept: application/fhir+json`; others keep LabFlow's JSON answer
(the same for every format). Each reason becomes an issue whose `expression` is the FHIRPath of the
element at fault (`Bundle.entry[2].resource.valueCodeableConcept`), whose `details` carry the HL7
table 0357 code labs already act on, whose `diagnostics` is the hint to fix it (the issue
catalogue's, when there is one), and whose `code` is the nearest FHIR issue type. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

FHIR_JSON = "application/fhir+json"
V2_0357 = "http://terminology.hl7.org/CodeSystem/v2-0357"
SUBMISSION_EXTENSION = "https://labflow.example/fhir/StructureDefinition/submission"

# HL7 v2 table 0357 → FHIR issue type (http://hl7.org/fhir/issue-type)
_ISSUE_TYPE = {"100": "structure", "101": "required", "102": "value", "103": "code-invalid",
               "200": "not-supported", "203": "not-supported", "204": "not-found", "207": "exception"}
# the HTTP status of an answer without items → FHIR issue type
_STATUS_TYPE = {400: "structure", 401: "login", 403: "forbidden", 413: "too-costly", 422: "invalid",
                503: "transient"}
_SEVERITY = {"E": "error", "W": "warning", "I": "information"}


def wants_fhir(accept: str) -> bool:
    return FHIR_JSON in accept.lower()


def operation_outcome(answer: dict[str, Any], status: int) -> dict[str, Any]:
    """LabFlow's JSON answer (a submission with its items, or `{"error", "detail"}`) as an
    OperationOutcome."""
    if "items" not in answer:
        return {
            "resourceType": "OperationOutcome",
            "issue": [{
                "severity": "fatal" if status >= 500 else "error",
                "code": _STATUS_TYPE.get(status, "processing"),
                "details": {"text": str(answer.get("detail", answer.get("error", "")))},
                "diagnostics": str(answer.get("error", "")),
            }],
        }
    issues: list[dict[str, Any]] = []
    for item in answer["items"]:
        for reason in item["reasons"]:
            issue: dict[str, Any] = {
                "severity": _SEVERITY.get(reason["severity"], "error"),
                "code": _ISSUE_TYPE.get(reason["code"], "processing"),
                "details": {"coding": [{"system": V2_0357, "code": reason["code"]}], "text": reason["text"]},
            }
            if reason.get("location"):
                issue["expression"] = [reason["location"]]
            if reason.get("hint"):
                issue["diagnostics"] = reason["hint"]
            issues.append(issue)
        if item["status"] == "accepted":
            ids = ", ".join(item["result_ids"]) or "none"
            issues.append({"severity": "information", "code": "informational",
                           "details": {"text": f"accepted ({item['ack_code']}): result ids {ids}"}})
    if answer.get("error") == "forbidden":
        issues.append({"severity": "error", "code": "forbidden", "details": {"text": answer["detail"]}})
    return {
        "resourceType": "OperationOutcome",
        "id": answer["submission_id"],
        "extension": [{"url": SUBMISSION_EXTENSION, "valueString": answer["status"]}],
        "issue": issues or [{"severity": "information", "code": "informational",
                             "details": {"text": "nothing to report"}}],
    }
