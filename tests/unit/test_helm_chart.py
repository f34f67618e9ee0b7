"""deploy/helm/labflow, validated offline with the real helm and kubeconform (`make helm-tools`).

Every object both values files render is checked against the vendored schemas (Kubernetes 1.37 OpenAPI and
the Strimzi, CloudNativePG, KEDA and Prometheus-operator CRDs, deploy/helm/schemas/SOURCES.md); then what a
schema cannot say: least-privilege Kafka ACLs and database roles, probes, limits, PDBs, security contexts,
network flows, one source for the alerts and the dashboard, and no secret value anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from services.core.config import REPO_ROOT

CHART = REPO_ROOT / "deploy" / "helm" / "labflow"
SCHEMAS = REPO_ROOT / "deploy" / "helm" / "schemas"
TOOLS = REPO_ROOT / ".labflow" / "bin"
KUBE_VERSION = "1.37.2"  # the vendored Kubernetes OpenAPI schema's release
VALUES = {"laptop": [], "national": ["-f", str(CHART / "values-national.yaml")]}
SERVICES = ("gateway", "worker", "tracing", "opendata", "dashboard")
TOPICS = {"raw": "lab.results.raw.v1", "results": "lab.results.v1",
          "rejected": "lab.results.rejected.v1", "cases": "cases.v1"}
# the highest peak RSS (MB, 10^6 bytes; the kernel's VmHWM) the load tests measured (`make bench`,
# 2026-12-01): the gateway holding 5,000 labs' connections, the worker after a lag spike in the 10-minute
# run, tracing in that run
MEASURED_RSS_MB = {"gateway": 180, "worker": 433, "tracing": 127}


def tool(name: str) -> str:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make helm-tools`", pytrace=False)
    return str(path)


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, input=stdin)


def render(*extra: str) -> str:
    done = run(tool("helm"), "template", "labflow", str(CHART), "--namespace", "labflow",
               "--kube-version", KUBE_VERSION, *extra)
    assert done.returncode == 0, done.stderr
    return done.stdout


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


Rendered = tuple[str, str, list[dict[str, Any]]]
"""The values file's name, the rendered text and its objects."""


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request: pytest.FixtureRequest) -> Rendered:
    text = render(*VALUES[request.param])
    return request.param, text, objects(text)


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def by_name(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in of_kind(docs, kind)}


def component(doc: dict[str, Any]) -> str:
    name = doc["metadata"]["labels"]["app.kubernetes.io/component"]
    assert isinstance(name, str), f"the app.kubernetes.io/component label is not a string: {name!r}"
    return name


def mebibytes(quantity: str | int) -> float:
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(quantity))
    assert match, quantity
    factor = {None: 1 / 2**20, "Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 2**20,
              "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20, "T": 1e12 / 2**20}[match.group(2)]
    return float(match.group(1)) * factor


# --- the chart is valid --------------------------------------------------------------------------------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_strict(values: str) -> None:
    done = run(tool("helm"), "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, *VALUES[values])
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_rendered_object_is_valid_against_the_vendored_schemas(rendered: Rendered) -> None:
    """kubeconform, offline, strict schemas: no unknown field, no missing schema (nothing skipped)."""
    _, text, docs = rendered
    done = run(tool("kubeconform"), "-strict", "-summary", "-output", "json",
               "-schema-location", str(SCHEMAS / "json" / "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
               "-", stdin=text)
    report = json.loads(done.stdout)
    assert done.returncode == 0, json.dumps(report["resources"], indent=1)[:4000]
    assert report["summary"] == {"valid": len(docs), "invalid": 0, "errors": 0, "skipped": 0}


def test_the_schemas_catch_a_misspelt_field(rendered: Rendered) -> None:
    """The vendored schemas are strict: a typo in a CRD or a core object fails instead of being dropped."""
    _, text, _ = rendered
    location = str(SCHEMAS / "json" / "{{ .ResourceKind }}{{ .KindSuffix }}.json")
    for good, bad in (("    listeners:", "    listners:"), ("  roles: [broker]", "  role: [broker]"),
                      ("  revisionHistoryLimit: 5", "  revisionHistoryLimits: 5"),
                      ("operations: [Read, Describe]", "operations: [Reed, Describe]")):
        assert good in text, good
        done = run(tool("kubeconform"), "-strict", "-schema-location", location, "-",
                   stdin=text.replace(good, bad, 1))
        assert done.returncode == 1 and "is invalid" in done.stdout, bad


def test_vendored_schemas_are_the_fetched_ones() -> None:
    """json/ is what fetch.sh + convert.py wrote (SHA256SUMS), one file per kind the chart renders."""
    sums = {name: digest for digest, name in (line.split("  ./") for line in
                                              (SCHEMAS / "json" / "SHA256SUMS").read_text().splitlines())}
    files = {path.name for path in (SCHEMAS / "json").glob("*.json")}
    assert files == set(sums)
    for name, digest in sums.items():
        assert hashlib.sha256((SCHEMAS / "json" / name).read_bytes()).hexdigest() == digest, name
    fetch = (SCHEMAS / "fetch.sh").read_text()
    sources = (SCHEMAS / "SOURCES.md").read_text()
    for variable in ("K8S_VERSION", "CNPG_VERSION", "KEDA_VERSION", "PROMOP_VERSION", "STRIMZI_VERSION"):
        setting = re.search(rf"^{variable}=(\S+)", fetch, re.M)
        assert setting is not None, f"fetch.sh does not set {variable}"
        version = setting.group(1)
        assert version in sources, (variable, version)
    assert sum(path.stat().st_size for path in (SCHEMAS / "json").glob("*.json")) < 2_000_000


def test_the_rendered_kinds(rendered: Rendered) -> None:
    name, _, docs = rendered
    kinds = {doc["kind"] for doc in docs}
    assert kinds >= {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "Cluster", "PodMonitor",
                     "Job", "CronJob", "Deployment", "Service", "Ingress", "PodDisruptionBudget",
                     "NetworkPolicy", "ScaledObject", "TriggerAuthentication", "ServiceMonitor",
                     "PrometheusRule", "ConfigMap", "PersistentVolumeClaim", "ServiceAccount"}
    assert ("ScheduledBackup" in kinds) == (name == "national")
    assert not of_kind(docs, "Secret"), "the chart never carries a Secret"


# --- Kafka ---------------------------------------------------------------------------------------------


def test_kafka_kraft_node_pools_and_rack_awareness(rendered: Rendered) -> None:
    _, _, docs = rendered
    (kafka,) = of_kind(docs, "Kafka")
    assert kafka["spec"]["kafka"]["rack"]["topologyKey"] == "topology.kubernetes.io/zone"
    assert kafka["spec"]["kafka"]["authorization"]["type"] == "simple"
    (listener,) = kafka["spec"]["kafka"]["listeners"]
    assert listener["tls"] is True and listener["authentication"]["type"] == "tls"
    clients = {"podSelector": {"matchLabels": {"labflow.io/kafka-client": "true"}}}
    assert clients in listener["networkPolicyPeers"]
    assert kafka["spec"]["kafka"]["config"]["min.insync.replicas"] == 2
    pools = {pool["metadata"]["name"]: pool["spec"] for pool in of_kind(docs, "KafkaNodePool")}
    assert pools["controllers"]["roles"] == ["controller"] and pools["controllers"]["replicas"] == 3
    assert pools["brokers"]["roles"] == ["broker"] and pools["brokers"]["replicas"] >= 3
    assert "zookeeper" not in kafka["spec"]


def test_topics_replication_and_retention() -> None:
    docs = objects(render("--set", "nominativeRetentionDays=30",
                          "--set", "kafka.topics.results.partitions=9"))
    topics = {topic["spec"]["topicName"]: topic["spec"] for topic in of_kind(docs, "KafkaTopic")}
    assert set(topics) == set(TOPICS.values())
    for name, spec in topics.items():
        assert spec["replicas"] == 3 and spec["config"]["min.insync.replicas"] == 2, name
    day = 86_400_000
    assert topics["lab.results.raw.v1"]["config"]["retention.ms"] == 30 * day
    assert topics["lab.results.rejected.v1"]["config"]["retention.ms"] == 30 * day
    assert topics["lab.results.v1"]["partitions"] == 9
    # the purge uses the same number of days
    (purge,) = of_kind(docs, "CronJob")
    env = purge["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "LABFLOW_NOMINATIVE_RETENTION_DAYS", "value": "30"} in env


def acl_set(user: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {(acl["resource"]["type"], acl["resource"]["name"], acl["resource"].get("patternType", "literal"),
             operation)
            for acl in user["spec"]["authorization"]["acls"] for operation in acl["operations"]}


def test_each_kafka_user_has_the_least_acls(rendered: Rendered) -> None:
    _, _, docs = rendered
    users = {component(user): user for user in of_kind(docs, "KafkaUser")}

    def topic(key: str, *operations: str) -> set[tuple[str, str, str, str]]:
        return {("topic", TOPICS[key], "literal", operation) for operation in operations}

    def writes(*keys: str) -> set[tuple[str, str, str, str]]:
        return set().union(*(topic(key, "Write", "Describe") for key in keys))

    expected = {
        "gateway": writes("raw", "results", "rejected"),
        "worker": topic("results", "Read", "Describe") | writes("rejected", "cases")
        | topic("raw", "Read", "Describe") | topic("rejected", "Read")
        | {("group", group, "literal", "Read") for group in (
            "labflow-worker", "labflow-worker.lab-traffic-raw", "labflow-worker.lab-traffic-rejections")},
        "tracing": topic("cases", "Read", "Describe") | writes("rejected")
        | {("group", "labflow-tracing", "literal", "Read")},
        "operator": topic("rejected", "Read", "Describe") | writes("raw", "results", "rejected")
        | {("group", "labflow-rejected-reader-", "prefix", "Read")},
        "keda": topic("results", "Describe") | {("group", "labflow-worker", "literal", "Describe")},
    }
    assert {name: acl_set(user) for name, user in users.items()} == expected
    for user in users.values():
        assert user["spec"]["authentication"]["type"] == "tls"
        assert all(acl.get("type", "allow") == "allow" and acl["resource"].get("name") != "*"
                   for acl in user["spec"]["authorization"]["acls"])


def test_kafka_clients_use_their_own_user_over_mutual_tls(rendered: Rendered) -> None:
    _, _, docs = rendered
    deployments = {component(d): d for d in of_kind(docs, "Deployment")}
    for name, deployment in deployments.items():
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e for e in pod["containers"][0]["env"]}
        user_secrets = [v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "kafka-user"]
        if name in ("opendata", "dashboard"):
            assert "LABFLOW_KAFKA_BOOTSTRAP" not in env and not user_secrets, name
            continue
        assert env["LABFLOW_KAFKA_SECURITY_PROTOCOL"]["value"] == "SSL"
        assert user_secrets == [f"labflow-{name}"]


# --- PostgreSQL ----------------------------------------------------------------------------------------


def test_database_roles_are_one_per_service_and_least(rendered: Rendered) -> None:
    _, _, docs = rendered
    (cluster,) = of_kind(docs, "Cluster")
    spec = cluster["spec"]
    assert spec["instances"] == 3 and spec["enableSuperuserAccess"] is False
    roles = {role["name"]: role for role in spec["managed"]["roles"]}
    assert set(roles) == {f"labflow_{service}" for service in SERVICES}
    for name, role in roles.items():
        assert role["login"] is True and role["ensure"] == "present"
        for power in ("superuser", "createdb", "createrole", "replication", "bypassrls"):
            assert role[power] is False, (name, power)
        assert role["passwordSecret"]["name"] == "labflow-db-" + name.removeprefix("labflow_")
    assert spec["bootstrap"]["initdb"]["owner"] not in roles
    for deployment in of_kind(docs, "Deployment"):
        service = component(deployment)
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["LABFLOW_DB_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"labflow-db-{service}"
        assert env["LABFLOW_DATABASE_URL"]["value"].startswith(
            f"postgresql://labflow_{service}:$(LABFLOW_DB_PASSWORD)@labflow-db-rw:5432/")


def test_migrations_hook_and_purge_run_as_the_owner() -> None:
    for create, hook in (("true", "post-install,pre-upgrade"), ("false", "pre-install,pre-upgrade")):
        docs = objects(render("--set", f"postgres.create={create}"))
        (job,) = of_kind(docs, "Job")
        assert job["metadata"]["annotations"]["helm.sh/hook"] == hook
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["db", "upgrade"]
        (url,) = [e for e in container["env"] if e["name"] == "LABFLOW_DATABASE_URL"]
        assert url["valueFrom"]["secretKeyRef"] == {"name": "labflow-db-app", "key": "uri"}
        assert bool(of_kind(docs, "Cluster")) == (create == "true")
    (purge,) = of_kind(docs, "CronJob")
    assert purge["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] == ["purge"]


def test_backups_when_configured() -> None:
    docs = objects(render("-f", str(CHART / "values-national.yaml")))
    (cluster,) = of_kind(docs, "Cluster")
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://")
    assert store["s3Credentials"]["accessKeyId"]["name"] == "labflow-backup-s3"
    (scheduled,) = of_kind(docs, "ScheduledBackup")
    assert scheduled["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert cluster["spec"]["postgresql"]["synchronous"] == {"method": "any", "number": 1,
                                                            "dataDurability": "required"}


# --- workloads -----------------------------------------------------------------------------------------


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_every_deployment_has_probes_limits_a_pdb_and_a_locked_down_pod(rendered: Rendered) -> None:
    _, _, docs = rendered
    deployments = of_kind(docs, "Deployment")
    assert sorted(component(d) for d in deployments) == sorted(SERVICES)
    pdbs = of_kind(docs, "PodDisruptionBudget")
    for deployment in deployments:
        name = component(deployment)
        pod = deployment["spec"]["template"]["spec"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert [p for p in pdbs if selects(p["spec"]["selector"]["matchLabels"], labels)], name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["command"] == ["labflow"] and container["args"][0] == name
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
        ports = {p["name"] for p in container["ports"]}
        assert container["livenessProbe"]["httpGet"]["port"] in ports
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], name
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["LABFLOW_STATE_DIR"].startswith("/tmp/")


def test_resources_follow_the_measured_figures(rendered: Rendered) -> None:
    _, _, docs = rendered
    for deployment in of_kind(docs, "Deployment"):
        name = component(deployment)
        if name not in MEASURED_RSS_MB:
            continue
        resources = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]
        rss = MEASURED_RSS_MB[name] * 1e6 / 2**20
        assert mebibytes(resources["requests"]["memory"]) >= rss, name
        assert mebibytes(resources["limits"]["memory"]) >= 2 * rss, name


def test_worker_replicas_never_exceed_the_partitions(rendered: Rendered) -> None:
    _, _, docs = rendered
    (scaled,) = of_kind(docs, "ScaledObject")
    partitions = next(t["spec"]["partitions"] for t in of_kind(docs, "KafkaTopic")
                      if t["spec"]["topicName"] == TOPICS["results"])
    assert scaled["spec"]["maxReplicaCount"] <= partitions
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka" and trigger["metadata"]["consumerGroup"] == "labflow-worker"
    assert trigger["metadata"]["topic"] == TOPICS["results"]
    worker = by_name(docs, "Deployment")["labflow-worker"]
    assert "replicas" not in worker["spec"], "KEDA owns the worker's replica count"
    clamped = objects(render("--set", "worker.autoscaling.maxReplicas=500"))
    assert of_kind(clamped, "ScaledObject")[0]["spec"]["maxReplicaCount"] == 6


def test_gateway_exposure_and_mllp_mutual_tls() -> None:
    docs = objects(render("-f", str(CHART / "values-national.yaml")))
    services = by_name(docs, "Service")
    assert services["labflow-mllp"]["spec"]["type"] == "LoadBalancer"
    assert [p["port"] for p in services["labflow-mllp"]["spec"]["ports"]] == [2575]
    (ingress,) = of_kind(docs, "Ingress")
    assert ingress["spec"]["tls"][0]["secretName"]
    backends = {path["backend"]["service"]["name"] for rule in ingress["spec"]["rules"]
                for path in rule["http"]["paths"]}
    assert backends == {"labflow-gateway", "labflow-dashboard", "labflow-opendata"}
    gateway = by_name(docs, "Deployment")["labflow-gateway"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in gateway["containers"][0]["env"]}
    assert env["LABFLOW_MLLP_TLS_CLIENT_CA"] == "/etc/labflow/mllp-client-ca/ca.crt"
    assert {v["name"] for v in gateway["volumes"]} >= {"mllp-tls", "mllp-client-ca"}
    dashboard = by_name(docs, "Deployment")["labflow-dashboard"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in dashboard["containers"][0]["env"]}
    assert env["LABFLOW_DASHBOARD_JWT_JWKS_URL"].startswith("https://")
    assert env["LABFLOW_DASHBOARD_JWT_ISSUER"] and env["LABFLOW_DASHBOARD_JWT_AUDIENCE"]


# --- network -------------------------------------------------------------------------------------------


def test_default_deny_and_only_the_spec_flows(rendered: Rendered) -> None:
    _, _, docs = rendered
    policies = by_name(docs, "NetworkPolicy")
    deny = policies["labflow-default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    # who may reach Kafka and PostgreSQL, by label
    pods = {component(d): d["spec"]["template"]["metadata"]["labels"] for d in of_kind(docs, "Deployment")}
    kafka_clients = {name for name, labels in pods.items() if labels.get("labflow.io/kafka-client") == "true"}
    assert kafka_clients == {"gateway", "worker", "tracing"}
    assert all(labels.get("labflow.io/db-client") == "true" for labels in pods.values())
    (egress,) = policies["labflow-kafka-clients"]["spec"]["egress"]
    assert egress["ports"] == [{"protocol": "TCP", "port": 9093}]
    (egress,) = policies["labflow-db-clients"]["spec"]["egress"]
    assert egress["ports"] == [{"protocol": "TCP", "port": 5432}]
    gateway_ports = {port["port"] for rule in policies["labflow-gateway"]["spec"]["ingress"]
                     for port in rule["ports"]}
    assert gateway_ports == {2575, 8080, 9101}
    # only tracing (the platform) and the dashboard (the OIDC JWKS) go outside, on HTTPS
    outside = {name for name, policy in policies.items()
               for rule in policy["spec"].get("egress", []) for peer in rule.get("to", [])
               if "ipBlock" in peer and name.removeprefix("labflow-") in SERVICES}
    assert outside == {"labflow-tracing", "labflow-dashboard"}


# --- observability: one source ---------------------------------------------------------------------------


def test_chart_copies_are_identical_to_deploy_sources() -> None:
    """Helm reads no file outside the chart: files/ holds copies that must not drift from deploy/."""
    pairs = {CHART / "files" / "alerts.yml": REPO_ROOT / "deploy" / "prometheus" / "alerts.yml",
             CHART / "files" / "labflow-operations.json":
                 REPO_ROOT / "deploy" / "grafana" / "dashboards" / "labflow-operations.json"}
    for copy, source in pairs.items():
        assert copy.read_bytes() == source.read_bytes(), f"cp {source} {copy}"


def test_prometheus_rule_and_dashboard_are_the_deploy_ones(rendered: Rendered) -> None:
    _, _, docs = rendered
    (rule,) = of_kind(docs, "PrometheusRule")
    alerts = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]
    (dashboard,) = [c for c in of_kind(docs, "ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard")]
    source = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "labflow-operations.json"
    assert json.loads(dashboard["data"]["labflow-operations.json"]) == json.loads(source.read_text())
    monitored = {component(m) for m in of_kind(docs, "ServiceMonitor")}
    assert monitored == set(SERVICES)


# --- secrets ------------------------------------------------------------------------------------------

_SECRETISH_KEY = re.compile(r"password|passwd|secret|token|private|apikey|credential", re.I)
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_HIGH_ENTROPY = re.compile(r"^[A-Za-z0-9+/=_-]{24,}$")


def leaves(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in leaves(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [leaf for i, value in enumerate(node) for leaf in leaves(value, f"{path}[{i}]")]
    return [(path, node)]


@pytest.mark.parametrize("values_file", ["values.yaml", "values-national.yaml"])
def test_no_secret_value_in_values(values_file: str) -> None:
    """Secret-looking keys only name a Secret; no string looks like a key or a password."""
    for path, value in leaves(yaml.safe_load((CHART / values_file).read_text())):
        key = path.rsplit(".", 1)[-1]
        if _SECRETISH_KEY.search(key) and isinstance(value, str) and value:
            assert key.endswith(("Secret", "secret")) and _K8S_NAME.fullmatch(value), (path, value)
        if isinstance(value, str):
            assert not _HIGH_ENTROPY.match(value) or _K8S_NAME.fullmatch(value), (path, value)


def test_no_secret_value_in_rendered_env(rendered: Rendered) -> None:
    _, _, docs = rendered
    containers = [c for d in of_kind(docs, "Deployment") for c in d["spec"]["template"]["spec"]["containers"]]
    containers += [c for j in of_kind(docs, "Job") for c in j["spec"]["template"]["spec"]["containers"]]
    for container in containers:
        for env in container["env"]:
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", env["name"]) and "valueFrom" not in env:
                # only the path of a file mounted from a Secret
                assert env["value"].startswith("/etc/labflow/"), env
            if env["name"] == "LABFLOW_DATABASE_URL" and "value" in env:
                pattern = r"postgresql://labflow_[a-z]+:\$\(LABFLOW_DB_PASSWORD\)@[^ ]+"
                assert re.fullmatch(pattern, env["value"]), env


# --- the chart speaks the services' configuration -----------------------------------------------------


def test_every_rendered_setting_is_one_the_services_read(rendered: Rendered) -> None:
    """Each LABFLOW_* variable the chart sets is a field of Settings, and the values parse."""
    from services.core.config import Settings
    from services.core.kafka import consumer_config, producer_config

    _, _, docs = rendered
    known = {f"LABFLOW_{name.upper()}" for name in Settings.model_fields}
    pods = [d["spec"]["template"]["spec"] for d in of_kind(docs, "Deployment") + of_kind(docs, "Job")]
    pods += [c["spec"]["jobTemplate"]["spec"]["template"]["spec"] for c in of_kind(docs, "CronJob")]
    for pod in pods:
        env = {e["name"]: e.get("value", "from-a-secret") for e in pod["containers"][0]["env"]}
        helpers = {"LABFLOW_DB_PASSWORD"}  # only interpolated into LABFLOW_DATABASE_URL
        settings = {name: value for name, value in env.items() if name.startswith("LABFLOW_")}
        assert set(settings) - helpers <= known, set(settings) - helpers - known
        fields = {name.removeprefix("LABFLOW_").lower(): value for name, value in settings.items()
                  if name not in helpers and not value.startswith("from-a-secret")}
        parsed = Settings(_env_file=None, **fields)
        if "kafka_bootstrap" in fields:
            config = producer_config(parsed) | consumer_config(parsed, "g")
            assert config["security.protocol"] == "SSL"
            assert {"ssl.ca.location", "ssl.certificate.location", "ssl.key.location"} <= set(config)
            assert parsed.ops_host == "0.0.0.0"


def test_with_every_optional_part_off_the_chart_is_still_valid() -> None:
    """External Kafka and database, no operators for monitoring/KEDA, no Ingress, no NetworkPolicy."""
    off = ",".join(f"{key}=false" for key in (
        "networkPolicy.enabled", "monitoring.serviceMonitors", "monitoring.podMonitor",
        "monitoring.prometheusRule", "monitoring.grafanaDashboard", "worker.autoscaling.enabled",
        "kafka.create", "postgres.create", "ingress.enabled", "gateway.http"))
    text = render("--set", off, "--set", "opendata.persistence.existingClaim=publication")
    docs = objects(text)
    assert {doc["kind"] for doc in docs} == {"CronJob", "Deployment", "Job", "KafkaTopic", "KafkaUser",
                                             "PodDisruptionBudget", "Service", "ServiceAccount"}
    assert by_name(docs, "Deployment")["labflow-worker"]["spec"]["replicas"] == 1
    done = run(tool("kubeconform"), "-strict", "-summary",
               "-schema-location", str(SCHEMAS / "json" / "{{ .ResourceKind }}{{ .KindSuffix }}.json"),
               "-", stdin=text)
    assert done.returncode == 0, done.stdout
