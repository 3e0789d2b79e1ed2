{{- define "ridgeline.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "ridgeline.labels" -}}
app.kubernetes.io/name: ridgeline
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ridgeline.serviceAccountName" -}}
ridgeline-operator
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
