#!/usr/bin/env python3
"""Turn the upstream schemas that fetch.sh downloads into kubeconform's standalone JSON schemas.

Inputs, never edited by hand:
- Kubernetes' OpenAPI v3 documents (`api/openapi-spec/v3/*.json` of k8s.io/kubernetes);
- the CustomResourceDefinitions of Strimzi, CloudNativePG, KEDA and the Prometheus operator.

Output: one file per kind the chart renders, named as kubeconform's schema location
`{{ .ResourceKind }}{{ .KindSuffix }}.json` expects (`deployment-apps-v1.json`, `kafka-kafka-v1.json`).
Each file is standalone (every `$ref` it needs copied under `$defs`), and *strict*: an object with declared
properties refuses unknown ones (`additionalProperties: false`, unless the upstream schema says
`x-kubernetes-preserve-unknown-fields`), like kubeconform's `-strict` schema sets, so a misspelt field
fails the test instead of being silently dropped by the API server. Descriptions are left out to keep
the vendored files small; `x-kubernetes-int-or-string` becomes integer-or-string, `nullable` adds null.
Custom resources get Kubernetes' own ObjectMeta schema for `metadata` (CRDs only say `type: object`).

Usage: convert.py --openapi DIR --crd FILE... --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

# (group, version, kind) of every object the chart renders: only these are converted and vendored.
KINDS: set[tuple[str, str, str]] = {
    ("", "v1", "ConfigMap"),
    ("", "v1", "PersistentVolumeClaim"),
    ("", "v1", "Service"),
    ("", "v1", "ServiceAccount"),
    ("apps", "v1", "Deployment"),
    ("batch", "v1", "CronJob"),
    ("batch", "v1", "Job"),
    ("networking.k8s.io", "v1", "Ingress"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
    ("policy", "v1", "PodDisruptionBudget"),
    ("kafka.strimzi.io", "v1", "Kafka"),
    ("kafka.strimzi.io", "v1", "KafkaNodePool"),
    ("kafka.strimzi.io", "v1", "KafkaTopic"),
    ("kafka.strimzi.io", "v1", "KafkaUser"),
    ("postgresql.cnpg.io", "v1", "Cluster"),
    ("postgresql.cnpg.io", "v1", "ScheduledBackup"),
    ("keda.sh", "v1alpha1", "ScaledObject"),
    ("keda.sh", "v1alpha1", "TriggerAuthentication"),
    ("monitoring.coreos.com", "v1", "PodMonitor"),
    ("monitoring.coreos.com", "v1", "PrometheusRule"),
    ("monitoring.coreos.com", "v1", "ServiceMonitor"),
}

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
INT_OR_STRING = {"oneOf": [{"type": "integer"}, {"type": "string"}]}
_MAP_KEYWORDS = ("properties", "patternProperties", "$defs", "definitions")
_LIST_KEYWORDS = ("allOf", "anyOf", "oneOf", "prefixItems")
_SCHEMA_KEYWORDS = ("additionalProperties", "items", "not", "additionalItems", "contains")
_DROPPED = ("description", "example", "externalDocs")


def file_name(group: str, version: str, kind: str) -> str:
    """kubeconform's `{{ .ResourceKind }}{{ .KindSuffix }}.json` for this group/version."""
    suffix = f"-{group.split('.')[0]}-{version}" if group else f"-{version}"
    return f"{kind.lower()}{suffix}.json"


def convert(node: Any, refs: set[str]) -> Any:
    """One schema node, made strict and standalone; `refs` collects the component names it points to."""
    if isinstance(node, bool) or not isinstance(node, dict):
        return node
    if node.get("x-kubernetes-int-or-string"):
        return dict(INT_OR_STRING)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or key.startswith("x-kubernetes-") or key == "nullable":
            continue
        if key == "$ref":
            name = value.rsplit("/", 1)[-1]
            refs.add(name)
            out[key] = f"#/$defs/{name}"
        elif key in _MAP_KEYWORDS:
            out[key] = {name: convert(sub, refs) for name, sub in value.items()}
        elif key in _LIST_KEYWORDS:
            out[key] = [convert(sub, refs) for sub in value]
        elif key in _SCHEMA_KEYWORDS:
            subs = value if isinstance(value, list) else None
            out[key] = [convert(sub, refs) for sub in subs] if subs is not None else convert(value, refs)
        else:
            out[key] = value
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out \
            and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def standalone(root: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    refs: set[str] = set()
    schema = convert(root, refs)
    defs: dict[str, Any] = {}
    pending = sorted(refs)
    while pending:
        name = pending.pop()
        if name in defs:
            continue
        more: set[str] = set()
        defs[name] = convert(components[name], more)
        pending.extend(sorted(more - defs.keys()))
    document = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}
    if defs:
        document["$defs"] = dict(sorted(defs.items()))
    return document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--openapi", type=Path, required=True, help="k8s.io/kubernetes api/openapi-spec/v3")
    parser.add_argument("--crd", type=Path, nargs="+", required=True, help="CRD YAML files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    components: dict[str, Any] = {}
    for spec in sorted(args.openapi.glob("api*_openapi.json")):
        components.update(json.loads(spec.read_text())["components"]["schemas"])

    written: dict[str, dict[str, Any]] = {}
    for schema in components.values():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            key = (gvk["group"], gvk["version"], gvk["kind"])
            if key in KINDS:
                written[file_name(*key)] = standalone(schema, components)

    for path in args.crd:
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if (group, version["name"], kind) not in KINDS:
                    continue
                root = dict(version["schema"]["openAPIV3Schema"])
                root["properties"] = {**root.get("properties", {}), "metadata": {"$ref": f"#/{OBJECT_META}"}}
                written[file_name(group, version["name"], kind)] = standalone(root, components)

    missing = {file_name(*key) for key in KINDS} - written.keys()
    if missing:
        raise SystemExit(f"no upstream schema for: {sorted(missing)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for stale in args.out.glob("*.json"):
        if stale.name not in written:
            stale.unlink()
    for name, document in sorted(written.items()):
        (args.out / name).write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {(args.out / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
