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
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- $tag := .Values.image.tag | toString }}
{{- printf "%s:%s" .Values.image.repository (ternary .Chart.AppVersion $tag (or (eq $tag "") (eq $tag "<nil>"))) }}
{{- end }}
{{- end }}

{{/*
The rights the operator's code uses, and nothing else (tests/unit/test_rbac_rules.py derives
the used set from the code and compares both ways). Shared by the ClusterRole and, with
`namespace`, the Role.
*/}}
{{- define "canary-operator.rules" -}}
# the Canaries: watched; their status is written, and the command annotations
# (canary.dev/promote, abort, ...) are removed once decided; read before completing an earlier
# decision (the Canary must still be there, unchanged)
- apiGroups: ["canary.dev"]
  resources: [canaries]
  verbs: [get, list, watch, patch]
- apiGroups: ["canary.dev"]
  resources: [canaries/status]
  verbs: [patch]
# MetricTemplates are read through when the watch has not delivered them yet (after a restart)
- apiGroups: ["canary.dev"]
  resources: [metrictemplates]
  verbs: [get, list, watch]
- apiGroups: ["canary.dev"]
  resources: [alertproviders]
  verbs: [list, watch]
# targets are watched and scaled; <target>-primary is created and promoted
- apiGroups: ["apps"]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# the apex, -primary and -canary Services
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, update]
# the pods of a target or primary that is not ready are listed (only then) to name the first
# failing pod's reason (ImagePullBackOff, CrashLoopBackOff) in the progress-deadline message
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
# Events on the Canaries (patch: an identical event bumps the count of the one posted before)
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
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
