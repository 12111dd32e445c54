{{/* Names and labels shared by every template. */}}

{{- define "canary-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "canary-operator.fullname" -}}
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

{{- define "canary-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "canary-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "canary-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "canary-operator.labels" -}}
helm.sh/chart: {{ include "canary-operator.chart" . }}
{{ include "canary-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "canary-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "canary-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Lease that leader election uses (one per release, so shards do not share it). */}}
{{- define "canary-operator.leaseName" -}}
{{- printf "%s-leader" (include "canary-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "canary-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The rights the operator's code uses, and nothing else (tests/unit/test_rbac_rules.py derives
the used set from the code and compares both ways). Shared by the ClusterRole and, with
`namespace`, the Role.
*/}}
{{- define "canary-operator.rules" -}}
# the Canaries: watched; their status is written, and the command annotations
# (canary.dev/promote, abort, ...) are removed once decided
- apiGroups: ["canary.dev"]
  resources: [canaries]
  verbs: [list, watch, patch]
- apiGroups: ["canary.dev"]
  resources: [canaries/status]
  verbs: [patch]
- apiGroups: ["canary.dev"]
  resources: [metrictemplates, alertproviders]
  verbs: [list, watch]
# targets are watched and scaled; <target>-primary is created and promoted
- apiGroups: ["apps"]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch]
# the apex, -primary and -canary Services
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, update]
# Events on the Canaries
- apiGroups: [""]
  resources: [events]
  verbs: [create]
# config tracking: the ConfigMaps and Secrets a target uses are read and copied to per-Canary
# -primary copies (created, updated, replaced when immutable); the Secret of an AlertProvider
# with secretRef (webhook address, token) is read
- apiGroups: [""]
  resources: [configmaps, secrets]
  verbs: [get, list, watch, create, update, delete]
# the primary's HorizontalPodAutoscaler (autoscalerRef)
- apiGroups: ["autoscaling"]
  resources: [horizontalpodautoscalers]
  verbs: [get, create, update]
# traffic routing: Istio
- apiGroups: ["networking.istio.io"]
  resources: [virtualservices, destinationrules]
  verbs: [get, list, watch, create, update]
# traffic routing: Gateway API
- apiGroups: ["gateway.networking.k8s.io"]
  resources: [httproutes]
  verbs: [get, list, watch, create, update]
{{- end }}
