{{/*
Names. With the release named after the chart (`helm install pulsestream`)
objects get the same names as in k8s/: pulsestream-generator, ...
*/}}
{{- define "pulsestream.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pulsestream.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects: (dict "root" $ "component" "generator") */}}
{{- define "pulsestream.componentName" -}}
{{- printf "%s-%s" (include "pulsestream.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The ConfigMap the operator writes and the services mount. */}}
{{- define "pulsestream.settingsConfigMap" -}}
{{- default (printf "%s-settings" .Release.Name) .Values.settings.configMapName -}}
{{- end -}}

{{/* The Secret holding the streamer's API keys. */}}
{{- define "pulsestream.ingestTokensSecret" -}}
{{- default (printf "%s-ingest-tokens" (include "pulsestream.fullname" .)) .Values.generator.ingest.existingSecret -}}
{{- end -}}

{{- define "pulsestream.apiKeysSecret" -}}
{{- default (printf "%s-api-keys" (include "pulsestream.fullname" .)) .Values.streamer.apiKeys.existingSecret -}}
{{- end -}}

{{/* The Secret holding the secret that signs stream tokens: every replica must verify what another minted. */}}
{{- define "pulsestream.tokenSecret" -}}
{{- default (printf "%s-token-secret" (include "pulsestream.fullname" .)) .Values.streamer.tokens.existingSecret -}}
{{- end -}}

{{- define "pulsestream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{ include "pulsestream.selectorLabels" . }}
{{- end -}}

{{- define "pulsestream.selectorLabels" -}}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/part-of: {{ include "pulsestream.name" .root }}
{{- end -}}

{{/* image reference: (dict "root" $ "image" .Values.generator.image) */}}
{{- define "pulsestream.image" -}}
{{- $registry := .root.Values.image.registry -}}
{{- $tag := default .root.Chart.AppVersion (default .root.Values.image.tag .image.tag) -}}
{{- if .image.digest -}}
{{- printf "%s%s@%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s%s:%s" (ternary "" (printf "%s/" $registry) (empty $registry)) .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{/* Restricted Pod Security: pod level. */}}
{{- define "pulsestream.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security: container level. */}}
{{- define "pulsestream.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Environment every service shares: logs and OpenTelemetry. */}}
{{- define "pulsestream.commonEnv" -}}
- name: LOG_LEVEL
  value: {{ .root.Values.logLevel | quote }}
- name: LOG_FORMAT
  value: {{ .root.Values.logFormat | quote }}
- name: OTEL_TRACES_EXPORTER
  value: {{ .root.Values.tracing.exporter | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "pulsestream-%s" .component | quote }}
{{- if .root.Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .root.Values.tracing.otlpEndpoint | quote }}
{{- end }}
{{- end -}}

{{/* Scheduling knobs shared by the three Deployments: (dict "root" $ "values" .Values.generator) */}}
{{- define "pulsestream.scheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* GENERATOR_HISTORY_URL: the external Redis, else the in-chart one, else empty (memory). */}}
{{- define "pulsestream.historyUrl" -}}
{{- if .Values.generator.history.url -}}
{{- .Values.generator.history.url -}}
{{- else if .Values.redis.enabled -}}
{{- printf "redis://%s:%d/0" (include "pulsestream.componentName" (dict "root" . "component" "redis")) (int .Values.redis.port) -}}
{{- end -}}
{{- end -}}
