{{- /* The chart's name in labels and selectors (nameOverride). */}}
{{- define "ridgeline.name" -}}
{{- default "ridgeline" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- /* The operator's objects: Deployment, Service, ConfigMap, ClusterRole... (fullnameOverride). */}}
{{- define "ridgeline.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- /* What the Deployment, the Service and the ServiceMonitor select the operator's pod by:
immutable in a Deployment, so these two labels only. */}}
{{- define "ridgeline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ridgeline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ridgeline.labels" -}}
{{ include "ridgeline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* The operator's ServiceAccount: the chart's (serviceAccount.create) or one that exists. */}}
{{- define "ridgeline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default "ridgeline-operator" .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}


{{- /* Secrets: `get` one by name, the credentialsSecret an InferenceModel names, to read its
shape (config.json and safetensors headers) with the model's own credentials; `create` the
per-model Ray token Secret. Never list or watch: no Secret is read unless a model in that
namespace names it, and values are neither logged nor copied. */}}
{{- define "ridgeline.secretRules" -}}
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
{{- end -}}

{{- /* The node cache agent: its objects' name, labels and image (the first serving image unless
nodeCache.image says otherwise: the agent is in it). */}}
{{- define "ridgeline.nodeCacheName" -}}
{{- printf "%s-node-cache" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ridgeline.nodeCacheSelectorLabels" -}}
app.kubernetes.io/name: {{ include "ridgeline.name" . }}-node-cache
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "ridgeline.nodeCacheLabels" -}}
{{ include "ridgeline.nodeCacheSelectorLabels" . }}
app.kubernetes.io/component: node-cache
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ridgeline.nodeCacheImage" -}}
{{- .Values.nodeCache.image | default (index .Values.serving.images 0).image -}}
{{- end -}}
