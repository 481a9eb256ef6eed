{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "modelrollout.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name used for every object; the release name alone if it already contains the chart name. */}}
{{- define "modelrollout.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "modelrollout.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "modelrollout.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modelrollout.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modelrollout.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modelrollout.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The watched namespaces as a JSON list: the values' list, or the release namespace. */}}
{{- define "modelrollout.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/* An image reference; the tag defaults to the chart's appVersion. Call with (list image root). */}}
{{- define "modelrollout.image" -}}
{{- $image := index . 0 }}{{- $root := index . 1 }}
{{- printf "%s:%s" $image.repository (default $root.Chart.AppVersion $image.tag) }}
{{- end }}

{{/*
Namespaced grants from a list of {namespace, names} entries (rbac.configMaps, rbac.secrets)
as a JSON map namespace -> names. A namespace named twice is refused, so each namespace has
exactly one Role per resource kind.
*/}}
{{- define "modelrollout.grantsByNamespace" -}}
{{- $root := index . 0 }}{{- $entries := index . 1 }}{{- $what := index . 2 }}
{{- $grants := dict }}
{{- range $entries }}
{{- $ns := default $root.Release.Namespace .namespace }}
{{- if hasKey $grants $ns }}
{{- fail (printf "%s names namespace %q twice; merge its names into one entry" $what $ns) }}
{{- end }}
{{- $_ := set $grants $ns (default list .names) }}
{{- end }}
{{- $grants | toJson }}
{{- end }}
