{{/*
Expand the name of the chart.
*/}}
{{- define "access-eval.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If release name contains chart name it will be used as a full name.
*/}}
{{- define "access-eval.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "access-eval.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels
*/}}
{{- define "access-eval.labels" -}}
helm.sh/chart: {{ include "access-eval.chart" . }}
{{ include "access-eval.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: stream-processor
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels
*/}}
{{- define "access-eval.selectorLabels" -}}
app.kubernetes.io/name: {{ include "access-eval.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Create the name of the service account to use
*/}}
{{- define "access-eval.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "access-eval.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Container image reference: repository, then @digest if set, else :tag (default: the chart appVersion).
*/}}
{{- define "access-eval.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
Mount point of the Kafka CA certificate secret (kafka.caSecret).
*/}}
{{- define "access-eval.kafkaCaDir" -}}
/etc/access-eval/kafka-ca
{{- end }}

{{/*
true when the Kafka connection uses SASL (kafka.securityProtocol SASL_PLAINTEXT or SASL_SSL).
*/}}
{{- define "access-eval.saslEnabled" -}}
{{- if hasPrefix "SASL_" .Values.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{/*
true when the Kafka connection uses TLS (kafka.securityProtocol SSL or SASL_SSL).
*/}}
{{- define "access-eval.tlsEnabled" -}}
{{- if has .Values.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
KEDA's name for the SASL mechanism (the Kafka scaler's `sasl` parameter).
*/}}
{{- define "access-eval.kedaSasl" -}}
{{- $m := dict "PLAIN" "plaintext" "SCRAM-SHA-256" "scram_sha256" "SCRAM-SHA-512" "scram_sha512" }}
{{- get $m .Values.kafka.saslMechanism }}
{{- end }}

{{/*
kafka.bootstrapServers as plain host:port entries, comma-separated: librdkafka accepts
"[proto://]host[:port]", the KEDA Kafka scaler (sarama) only "host:port". No port means 9092.
*/}}
{{- define "access-eval.bootstrapHostPorts" -}}
{{- $out := list }}
{{- range (splitList "," .Values.kafka.bootstrapServers) }}
{{- $hostport := regexReplaceAll "^[A-Za-z_]+://" (trim .) "" }}
{{- if not (regexMatch ":[0-9]+$" $hostport) }}
{{- $hostport = printf "%s:9092" $hostport }}
{{- end }}
{{- $out = append $out $hostport }}
{{- end }}
{{- $out | join "," }}
{{- end }}

{{/*
Distinct TCP ports of kafka.bootstrapServers, comma-separated. Used by the NetworkPolicy when
networkPolicy.kafkaPorts is empty.
*/}}
{{- define "access-eval.bootstrapPorts" -}}
{{- $ports := list }}
{{- range (splitList "," (include "access-eval.bootstrapHostPorts" .)) }}
{{- $ports = append $ports (regexFind "[0-9]+$" .) }}
{{- end }}
{{- $ports | uniq | join "," }}
{{- end }}

{{/*
TCP port of processor.schemaRegistryUrl (explicit port, else 443 for https, 80 for http);
empty when no schema registry is configured.
*/}}
{{- define "access-eval.schemaRegistryPort" -}}
{{- with .Values.processor.schemaRegistryUrl }}
{{- $u := urlParse . }}
{{- if regexMatch ":[0-9]+$" $u.host }}
{{- regexFind "[0-9]+$" $u.host }}
{{- else if eq $u.scheme "https" }}443
{{- else }}80
{{- end }}
{{- end }}
{{- end }}

{{/*
Cross-field checks the JSON schema cannot express. Included by the Deployment so that every
render (install, upgrade, template, lint) fails early with a message naming the value to fix.
*/}}
{{- define "access-eval.validate" -}}
{{- $grace := int64 .Values.terminationGracePeriodSeconds }}
{{- $shutdown := int64 .Values.processor.shutdownTimeoutSeconds }}
{{- if le $grace $shutdown }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must be greater than processor.shutdownTimeoutSeconds (%d): Kubernetes kills the pod with SIGKILL when the grace period ends, before the processor has committed and left the group" $grace $shutdown) }}
{{- end }}
{{- if and .Values.autoscaling.enabled .Values.keda.enabled }}
{{- fail "autoscaling.enabled and keda.enabled are mutually exclusive: KEDA manages its own HorizontalPodAutoscaler" }}
{{- end }}
{{- if and .Values.kafka.saslMechanism (not (include "access-eval.saslEnabled" .)) }}
{{- fail (printf "kafka.saslMechanism is %q but kafka.securityProtocol is %q: set kafka.securityProtocol to SASL_SSL or SASL_PLAINTEXT" .Values.kafka.saslMechanism (.Values.kafka.securityProtocol | default "PLAINTEXT")) }}
{{- end }}
{{- if and (include "access-eval.saslEnabled" .) (not .Values.kafka.saslMechanism) }}
{{- fail (printf "kafka.securityProtocol is %s: set kafka.saslMechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)" .Values.kafka.securityProtocol) }}
{{- end }}
{{- if and .Values.keda.enabled (include "access-eval.saslEnabled" .) (not .Values.kafka.existingSecret) }}
{{- fail "keda.enabled with SASL needs kafka.existingSecret (keys ACCESS_EVAL_KAFKA_SASL_USERNAME and ACCESS_EVAL_KAFKA_SASL_PASSWORD): the KEDA TriggerAuthentication reads the credentials from it" }}
{{- end }}
{{- $firstClass := dict "bootstrap.servers" "kafka.bootstrapServers" "group.id" "kafka.groupId" "security.protocol" "kafka.securityProtocol" "sasl.mechanism" "kafka.saslMechanism" "sasl.mechanisms" "kafka.saslMechanism" "ssl.ca.location" "kafka.caSecret" }}
{{- range $key, $_ := .Values.kafka.extraProperties }}
{{- if hasKey $firstClass $key }}
{{- fail (printf "kafka.extraProperties.%s: use %s instead" $key (get $firstClass $key)) }}
{{- end }}
{{- /* The processor's log redaction rule (docs/configuration.md), minus paths: a name with "key" is a
       credential unless it names a file (ssl.key.location, ssl.keystore.location, sasl.kerberos.keytab). */}}
{{- $keyName := and (regexMatch "key" (lower $key)) (not (regexMatch "\\.location$|keytab$" (lower $key))) }}
{{- if or $keyName (regexMatch "password|secret|token|jaas|oauthbearer\\.config|user\\.info|credentials|private|^sasl\\.username$" (lower $key)) }}
{{- fail (printf "kafka.extraProperties.%s looks like a credential and would be stored in a ConfigMap: put it in the Secret named by kafka.existingSecret as ACCESS_EVAL_KAFKA_%s" $key (upper (replace "." "_" $key))) }}
{{- end }}
{{- end }}
{{- end }}
