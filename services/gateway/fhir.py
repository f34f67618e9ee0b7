"""FHIR R4 Bundle (Patient, Specimen, Observation, DiagnosticReport) → result rows (pure).

Each Observation listed in a DiagnosticReport's `result` is one `ResultRow` (see `result_drafts`): its
patient is the report's `subject`, its specimen the report's first `specimen` (else the Observation's),
the collection time the Specimen's `collection.collectedDateTime` (else the report's
`effectiveDateTime`), the result time the report's `issued`. Rows keep the FHIR path of every value so
the reasons of the checks are located in FHIR terms. Reading is total: any JSON gives rows and
issues, never an exception, except `FhirError` when the document is not a Bundle at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.core.domain.terminology import INS_NIR_OID, INS_OIDS
from services.gateway import issue_catalogue as catalogue
from services.gateway.issues import Issue, IssueKind
from services.gateway.result_drafts import ResultRow

LOINC_SYSTEM = "http://loinc.org"
SNOMED_SYSTEM = "http://snomed.info/sct"
STATUSES = {
    "final": "F",
    "amended": "C",
    "corrected": "C",
    "preliminary": "P",
    "cancelled": "X",
    "entered-in-error": "D",
}
GENDERS = {"female": "F", "male": "M", "other": "O", "unknown": "U"}


class FhirError(ValueError):
    """The JSON document is not a FHIR Bundle (4xx)."""


@dataclass(slots=True)
class BundleContent:
    control_id: str
    """Bundle.identifier.value, else Bundle.id ("" when neither is sent)."""
    control_id_path: str = "Bundle.identifier.value"
    """Where `control_id` was read: how a problem of MSH-10 is located in FHIR terms."""
    rows: list[ResultRow] = field(default_factory=list)
    issues: list[tuple[Issue, str]] = field(default_factory=list)
    performers: list[tuple[str, ...]] = field(default_factory=list)
    """Identifier values of each Organization named as a DiagnosticReport.performer: the sending lab."""


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _coding(concept: Any, system: str) -> str:
    """The code of `concept` in `system` ("" if none)."""
    for coding in _list(_obj(concept).get("coding")):
        coding = _obj(coding)
        if _str(coding.get("system")) == system and _str(coding.get("code")):
            return _str(coding.get("code"))
    return ""


def _value(observation: dict[str, Any]) -> str:
    concept = _obj(observation.get("valueCodeableConcept"))
    if concept:
        code = _coding(concept, SNOMED_SYSTEM)
        if code:
            return code
        if _str(concept.get("text")):
            return _str(concept.get("text"))
        for coding in _list(concept.get("coding")):
            shown = _str(_obj(coding).get("display")) or _str(_obj(coding).get("code"))
            if shown:
                return shown
        return ""
    return _str(observation.get("valueString"))


def _issue(kind: IssueKind, text: str, where: str) -> tuple[Issue, str]:
    return kind.unlocated(f"{where}: {text}"), where


class _Bundle:
    def __init__(self, entries: list[Any]) -> None:
        self.resources: list[tuple[str, dict[str, Any]]] = []
        self.by_reference: dict[str, tuple[str, dict[str, Any]]] = {}
        self.issues: list[tuple[Issue, str]] = []
        for i, entry in enumerate(entries):
            path = f"Bundle.entry[{i}].resource"
            resource = _obj(_obj(entry).get("resource"))
            kind = _str(resource.get("resourceType"))
            if not kind:
                self.issues.append(
                    _issue(
                        catalogue.FHIR_ENTRY_WITHOUT_RESOURCE,
                        "entry without a resource (or without resourceType)",
                        path,
                    )
                )
                continue
            self.resources.append((path, resource))
            full_url = _str(_obj(entry).get("fullUrl"))
            if full_url:
                self.by_reference[full_url] = (path, resource)
            if _str(resource.get("id")):
                self.by_reference[f"{kind}/{_str(resource.get('id'))}"] = (path, resource)
                if full_url.endswith(f"/{kind}/{_str(resource.get('id'))}"):
                    self.by_reference[full_url] = (path, resource)

    def resolve(self, reference: Any, kind: str, where: str) -> tuple[str, dict[str, Any]] | None:
        """The resource a Reference points to, when it is in the Bundle and of `kind` (else reported)."""
        target = _str(_obj(reference).get("reference"))
        found = self.by_reference.get(target)
        if not target:
            self.issues.append(
                _issue(catalogue.FHIR_REFERENCE_MISSING, f"reference to a {kind} missing", where)
            )
        elif found is None or _str(found[1].get("resourceType")) != kind:
            # the reference itself is not repeated: labs may build ids from patient data
            self.issues.append(
                _issue(
                    catalogue.FHIR_REFERENCE_NOT_IN_BUNDLE,
                    f"the referenced {kind} is not in the Bundle",
                    where,
                )
            )
        else:
            return found
        return None


def _patient_fields(path: str, patient: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    values: dict[str, str] = {}
    paths = {
        "ins": f"{path}.identifier",
        "birth_name": f"{path}.name.family",
        "given_names": f"{path}.name.given",
        "birth_date": f"{path}.birthDate",
        "sex": f"{path}.gender",
        "postal_code": f"{path}.address.postalCode",
        "patient_id": f"{path}.identifier",
        "street": f"{path}.address.line",
        "city": f"{path}.address.city",
        "country": f"{path}.address.country",
        "phone": f"{path}.telecom",
        "email": f"{path}.telecom",
    }
    for identifier in _list(patient.get("identifier")):
        identifier = _obj(identifier)
        system, value = _str(identifier.get("system")), _str(identifier.get("value"))
        oid = system.removeprefix("urn:oid:")
        if oid in INS_OIDS and value and "ins" not in values:
            values["ins"], values["ins_oid"] = value, oid
        elif value and "patient_id" not in values:
            values["patient_id"] = value
    names = [_obj(n) for n in _list(patient.get("name"))]
    name = next((n for n in names if _str(n.get("use")) == "official"), names[0] if names else {})
    values["birth_name"] = _str(name.get("family"))
    values["given_names"] = " ".join(filter(None, (_str(g) for g in _list(name.get("given")))))
    values["birth_date"] = _str(patient.get("birthDate"))
    gender = _str(patient.get("gender"))
    values["sex"] = GENDERS.get(gender, gender)
    addresses = [_obj(a) for a in _list(patient.get("address"))]
    address = next((a for a in addresses if _str(a.get("use")) == "home"), addresses[0] if addresses else {})
    values["street"] = " ".join(filter(None, (_str(line) for line in _list(address.get("line")))))
    values["city"] = _str(address.get("city"))
    values["postal_code"] = _str(address.get("postalCode"))
    values["country"] = _str(address.get("country"))
    for telecom in _list(patient.get("telecom")):
        telecom = _obj(telecom)
        system, value = _str(telecom.get("system")), _str(telecom.get("value"))
        if system == "phone" and value and "phone" not in values:
            values["phone"] = value
        elif system == "email" and value and "email" not in values:
            values["email"] = value
    return values, paths


def _specimen_fields(path: str, specimen: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    identifiers = [_obj(specimen.get("accessionIdentifier")), *map(_obj, _list(specimen.get("identifier")))]
    values = {
        "specimen_id": next((_str(i.get("value")) for i in identifiers if _str(i.get("value"))), ""),
        "specimen_type": _coding(specimen.get("type"), SNOMED_SYSTEM),
        "collected_at": _str(_obj(specimen.get("collection")).get("collectedDateTime")),
    }
    paths = {
        "specimen_id": f"{path}.accessionIdentifier",
        "specimen_type": f"{path}.type",
        "collected_at": f"{path}.collection.collectedDateTime",
    }
    return values, paths


def read_bundle(document: Any) -> BundleContent:
    bundle = _obj(document)
    if _str(bundle.get("resourceType")) != "Bundle":
        raise FhirError("the document is not a FHIR Bundle (resourceType must be 'Bundle')")
    entries = bundle.get("entry", [])
    if not isinstance(entries, list):
        raise FhirError("Bundle.entry must be an array")
    identifier = _str(_obj(bundle.get("identifier")).get("value"))
    content = BundleContent(identifier or _str(bundle.get("id")))
    if not identifier:
        content.control_id_path = "Bundle.id"
    index = _Bundle(entries)
    reports = [(p, r) for p, r in index.resources if _str(r.get("resourceType")) == "DiagnosticReport"]
    if not reports:
        index.issues.append(
            _issue(catalogue.FHIR_NO_REPORT, "the Bundle has no DiagnosticReport", "Bundle.entry")
        )
    listed: set[str] = set()
    for report_path, report in reports:
        for performer in _list(report.get("performer")):
            target = index.by_reference.get(_str(_obj(performer).get("reference")))
            if target is not None and _str(target[1].get("resourceType")) == "Organization":
                ids = tuple(_str(_obj(i).get("value")) for i in _list(target[1].get("identifier")))
                if any(ids):
                    content.performers.append(tuple(i for i in ids if i))
        patient = index.resolve(report.get("subject"), "Patient", f"{report_path}.subject")
        base: dict[str, str] = {
            "specimen_id": _str(_obj(next(iter(_list(report.get("identifier"))), None)).get("value")),
            "collected_at": _str(report.get("effectiveDateTime")),
            "result_at": _str(report.get("issued")),
        }
        paths = {
            "specimen_id": f"{report_path}.identifier",
            "collected_at": f"{report_path}.effectiveDateTime",
            "result_at": f"{report_path}.issued",
        }
        if patient is not None:
            values, where = _patient_fields(*patient)
            base.update(values)
            paths.update(where)
        specimens = _list(report.get("specimen"))
        if specimens:
            specimen = index.resolve(specimens[0], "Specimen", f"{report_path}.specimen[0]")
            if specimen is not None:
                values, where = _specimen_fields(*specimen)
                base.update({k: v for k, v in values.items() if v})
                paths.update({k: p for k, p in where.items() if values[k] or not base.get(k)})
        results = _list(report.get("result"))
        if not results:
            index.issues.append(
                _issue(
                    catalogue.FHIR_REPORT_WITHOUT_OBSERVATION,
                    "the DiagnosticReport lists no Observation",
                    f"{report_path}.result",
                )
            )
        for r, reference in enumerate(results):
            found = index.resolve(reference, "Observation", f"{report_path}.result[{r}]")
            if found is None or patient is None:
                continue
            obs_path, observation = found
            listed.add(obs_path)
            status = _str(observation.get("status"))
            value_path = "valueCodeableConcept" if "valueCodeableConcept" in observation else "valueString"
            content.rows.append(
                ResultRow(
                    **{k: v for k, v in base.items() if k != "ins_oid"},
                    ins_oid=base.get("ins_oid", INS_NIR_OID),
                    loinc=_coding(observation.get("code"), LOINC_SYSTEM),
                    result=_value(observation),
                    status=STATUSES.get(status, status),
                    observed_at=_str(observation.get("issued")),
                    where=obs_path,
                    paths={
                        **paths,
                        "loinc": f"{obs_path}.code",
                        "result": f"{obs_path}.{value_path}",
                        "status": f"{obs_path}.status",
                        "observed_at": f"{obs_path}.issued",
                    },
                )
            )
    for path, resource in index.resources:
        if _str(resource.get("resourceType")) == "Observation" and path not in listed:
            index.issues.append(
                _issue(
                    catalogue.FHIR_OBSERVATION_NOT_LISTED,
                    "Observation not listed in any DiagnosticReport.result: not read",
                    path,
                )
            )
    content.issues = index.issues
    return content
