{{/*
Names, labels and the pieces every Ferry pod shares.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "ferry.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The base name of every object: fullnameOverride, else the release name when it already contains
the chart name (`helm install ferry …` gives `ferry-registry`, not `ferry-ferry-registry`), else
release-chart. Kept to 45 characters so the longest suffix (`-registry-migrate`) fits in 63.
*/}}
{{- define "ferry.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "ferry.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "ferry.labels" -}}
helm.sh/chart: {{ include "ferry.chart" . }}
{{ include "ferry.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferry
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The labels Services and Deployments select on (never change them: selectors are immutable). */}}
{{- define "ferry.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferry.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Component names and labels: call with (dict "ctx" $ "component" "registry"). */}}
{{- define "ferry.componentName" -}}
{{- printf "%s-%s" (include "ferry.fullname" .ctx) .component }}
{{- end }}

{{- define "ferry.componentLabels" -}}
{{ include "ferry.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ferry.componentSelectorLabels" -}}
{{ include "ferry.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The image, by digest when one is given. */}}
{{- define "ferry.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The registry's tokens Secret: the user's, or the one this chart generates. */}}
{{- define "ferry.registry.tokensSecret" -}}
{{- if .Values.registry.auth.existingSecret }}
{{- .Values.registry.auth.existingSecret }}
{{- else }}
{{- printf "%s-registry-tokens" (include "ferry.fullname" .) }}
{{- end }}
{{- end }}

{{/* In-cluster URL of the registry. */}}
{{- define "ferry.registry.url" -}}
{{- printf "http://%s.%s.svc:%d" (include "ferry.componentName" (dict "ctx" . "component" "registry")) .Release.Namespace (int .Values.registry.service.port) }}
{{- end }}

{{/* The registry's data volume claim. */}}
{{- define "ferry.registry.claimName" -}}
{{- if .Values.registry.persistence.existingClaim }}
{{- .Values.registry.persistence.existingClaim }}
{{- else }}
{{- printf "%s-data" (include "ferry.componentName" (dict "ctx" . "component" "registry")) }}
{{- end }}
{{- end }}

{{/* Whether the registry keeps anything on its data volume (SQLite or file blobs). */}}
{{- define "ferry.registry.usesDataVolume" -}}
{{- if or (eq .Values.registry.database.type "sqlite") (eq .Values.registry.objectStore.type "file") }}true{{ end }}
{{- end }}

{{/* Service account names. */}}
{{- define "ferry.serviceAccountName" -}}
{{- $sa := index .ctx.Values .component "serviceAccount" }}
{{- if $sa.create }}
{{- default (include "ferry.componentName" .) $sa.name }}
{{- else }}
{{- default "default" $sa.name }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every Ferry pod. */}}
{{- define "ferry.podCommon" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Environment every Ferry container gets. */}}
{{- define "ferry.commonEnv" -}}
- name: FERRY_LOG_FORMAT
  value: {{ .Values.log.format | quote }}
- name: FERRY_LOG
  value: {{ .Values.log.level | quote }}
{{- with (include "ferry.feedbackStore" .) }}
- name: FERRY_FEEDBACK_STORE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.features.redisUrl }}
- name: FERRY_FEATURE_STORE
  value: {{ . | quote }}
{{- end }}
{{- end }}

{{/* The shared prediction index: feedback.redisUrl, else the in-chart Redis's Service. */}}
{{- define "ferry.feedbackStore" -}}
{{- if .Values.feedback.redisUrl }}
{{- .Values.feedback.redisUrl }}
{{- else if .Values.feedback.redis.enabled }}
{{- printf "redis://%s.%s.svc:6379" (include "ferry.componentName" (dict "ctx" . "component" "redis")) .Release.Namespace }}
{{- end }}
{{- end }}

{{/*
The registry's settings as flags, shared by the server and `ferry registry migrate` so both open
the same database. The database URL itself comes from a Secret through FERRY_DATABASE_URL.
*/}}
{{- define "ferry.registry.storeArgs" -}}
- --data-dir=/var/lib/ferry
{{- $store := .Values.registry.objectStore }}
{{- if eq $store.type "file" }}
- --blob-url=file:///var/lib/ferry/blobs
{{- else }}
- --blob-url={{ $store.url }}
{{- end }}
{{- if eq $store.type "s3" }}
{{- with $store.s3.endpoint }}
- --s3-endpoint={{ . }}
{{- end }}
{{- with $store.s3.region }}
- --s3-region={{ . }}
{{- end }}
{{- if $store.s3.allowHttp }}
- --s3-allow-http=true
{{- end }}
{{- end }}
{{- range $key, $value := $store.options }}
- --blob-option={{ $key }}={{ $value }}
{{- end }}
{{- end }}

{{- define "ferry.registry.databaseEnv" -}}
{{- if eq .Values.registry.database.type "external" }}
- name: FERRY_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.registry.database.external.existingSecret }}
      key: {{ .Values.registry.database.external.urlKey }}
{{- end }}
{{- end }}

{{/* The key of the tokens file inside the tokens Secret. */}}
{{- define "ferry.registry.tokensKey" -}}
{{- if .Values.registry.auth.existingSecret }}{{ .Values.registry.auth.tokensKey }}{{ else }}tokens{{ end }}
{{- end }}

{{/* The key of serving's tokens file: the generated Secret's `serving-tokens` (read and write,
no admin: serving pods face traffic), else serving.tokensKey, else the registry's. */}}
{{- define "ferry.serving.tokensKey" -}}
{{- if .Values.serving.tokensKey }}{{ .Values.serving.tokensKey }}{{ else if .Values.registry.auth.existingSecret }}{{ .Values.registry.auth.tokensKey }}{{ else }}serving-tokens{{ end }}
{{- end }}

{{/* A tokens file, mounted read-only at /etc/ferry/tokens/tokens: call with (dict "ctx" $ "key" KEY). */}}
{{- define "ferry.tokensVolume" -}}
- name: tokens
  secret:
    secretName: {{ include "ferry.registry.tokensSecret" .ctx }}
    defaultMode: 0440
    items:
      - key: {{ .key }}
        path: tokens
{{- end }}

{{/*
PodDisruptionBudget's API: policy/v1 from Kubernetes 1.21, policy/v1beta1 before (the chart
supports 1.20).
*/}}
{{- define "ferry.pdbApiVersion" -}}
{{- if semverCompare ">=1.21-0" .Capabilities.KubeVersion.Version -}}
policy/v1
{{- else -}}
policy/v1beta1
{{- end -}}
{{- end }}
