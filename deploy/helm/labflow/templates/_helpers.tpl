{{/* Names, labels and the pieces every LabFlow pod shares. */}}

{{- define "labflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "labflow.labels" -}}
app.kubernetes.io/name: labflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: labflow
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* selector labels of one component: include "labflow.selector" (list $ "gateway") */}}
{{- define "labflow.selector" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: labflow
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "labflow.componentLabels" -}}
{{ include "labflow.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "labflow.image" -}}
{{ printf "%s:%s" .Values.image.repository .Values.image.tag | quote }}
{{- end -}}

{{- define "labflow.topic" -}}
{{- $root := index . 0 -}}
{{- printf "%s%s" $root.Values.kafka.topicPrefix (index . 1) -}}
{{- end -}}

{{- define "labflow.topicNames" -}}
raw: lab.results.raw.v1
results: lab.results.v1
rejected: lab.results.rejected.v1
cases: cases.v1
{{- end -}}

{{- define "labflow.kafkaBootstrap" -}}
{{ printf "%s-kafka-bootstrap:%d" .Values.kafka.name (int .Values.kafka.listenerPort) }}
{{- end -}}

{{- define "labflow.dbHost" -}}
{{ .Values.postgres.host | default (printf "%s-rw" .Values.postgres.name) }}
{{- end -}}

{{- define "labflow.ownerSecret" -}}
{{ .Values.postgres.ownerSecret | default (printf "%s-app" .Values.postgres.name) }}
{{- end -}}

{{/* Kafka user (and its Secret, made by Strimzi's user operator) of a component */}}
{{- define "labflow.kafkaUser" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (include "labflow.fullname" $root) (index . 1) -}}
{{- end -}}

{{/* env shared by every LabFlow container */}}
{{- define "labflow.commonEnv" -}}
- name: LABFLOW_STATE_DIR
  value: /tmp/labflow
- name: LABFLOW_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LABFLOW_NOMINATIVE_RETENTION_DAYS
  value: {{ .Values.nominativeRetentionDays | quote }}
- name: LABFLOW_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: LABFLOW_OPS_HOST
  value: "0.0.0.0"
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Kafka over mutual TLS with the component's KafkaUser: include "labflow.kafkaEnv" (list $ "worker") */}}
{{- define "labflow.kafkaEnv" -}}
{{- $root := index . 0 -}}
- name: LABFLOW_KAFKA_BOOTSTRAP
  value: {{ include "labflow.kafkaBootstrap" $root }}
- name: LABFLOW_KAFKA_SECURITY_PROTOCOL
  value: SSL
- name: LABFLOW_KAFKA_SSL_CA_LOCATION
  value: /etc/labflow/kafka-ca/ca.crt
- name: LABFLOW_KAFKA_SSL_CERTIFICATE_LOCATION
  value: /etc/labflow/kafka-user/user.crt
- name: LABFLOW_KAFKA_SSL_KEY_LOCATION
  value: /etc/labflow/kafka-user/user.key
{{- end -}}

{{- define "labflow.kafkaVolumeMounts" -}}
- name: kafka-ca
  mountPath: /etc/labflow/kafka-ca
  readOnly: true
- name: kafka-user
  mountPath: /etc/labflow/kafka-user
  readOnly: true
{{- end -}}

{{- define "labflow.kafkaVolumes" -}}
{{- $root := index . 0 -}}
- name: kafka-ca
  secret:
    secretName: {{ printf "%s-cluster-ca-cert" $root.Values.kafka.name }}
    items: [{key: ca.crt, path: ca.crt}]
- name: kafka-user
  secret:
    secretName: {{ include "labflow.kafkaUser" (list $root (index . 1)) }}
    items: [{key: user.crt, path: user.crt}, {key: user.key, path: user.key}]
{{- end -}}

{{/* PostgreSQL as the component's own role: include "labflow.dbEnv" (list $ "gateway") */}}
{{- define "labflow.dbEnv" -}}
{{- $root := index . 0 -}}
{{- $role := index $root.Values.postgres.roles (index . 1) -}}
- name: LABFLOW_DB_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $role.passwordSecret }}
      key: password
- name: LABFLOW_DATABASE_URL
  value: {{ printf "postgresql://%s:$(LABFLOW_DB_PASSWORD)@%s:5432/%s?sslmode=require" $role.name (include "labflow.dbHost" $root) $root.Values.postgres.database | quote }}
{{- end -}}

{{/* PostgreSQL as the schema owner (migrations, purge): the `uri` of CloudNativePG's app Secret */}}
{{- define "labflow.ownerDbEnv" -}}
{{- $root := index . 0 -}}
- name: LABFLOW_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ index . 1 | default (include "labflow.ownerSecret" $root) }}
      key: uri
{{- end -}}

{{- define "labflow.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- define "labflow.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end -}}

{{- define "labflow.probes" -}}
{{- $root := index . 0 -}}
{{- $port := index . 1 -}}
livenessProbe:
  httpGet: {path: /healthz, port: {{ $port }}}
  {{- toYaml $root.Values.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet: {path: /readyz, port: {{ $port }}}
  {{- toYaml $root.Values.probes.readiness | nindent 2 }}
{{- end -}}

{{- define "labflow.nsPeer" -}}
namespaceSelector:
  matchLabels:
    kubernetes.io/metadata.name: {{ . }}
{{- end -}}
