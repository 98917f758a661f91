{{- define "fpgaflow.name" -}}{{ .Release.Name }}-operator{{- end -}}
{{- define "fpgaflow.labels" -}}
app.kubernetes.io/name: fpgaflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "fpgaflow.selector" -}}
app.kubernetes.io/name: fpgaflow
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
{{- define "fpgaflow.claim" -}}
{{- if .Values.artifacts.create -}}{{ .Release.Name }}-artifacts{{- else -}}{{ required "artifacts.existingClaim is required when artifacts.create is false" .Values.artifacts.existingClaim }}{{- end -}}
{{- end -}}
