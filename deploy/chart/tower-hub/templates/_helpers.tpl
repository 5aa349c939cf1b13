{{- define "tower-hub.name" -}}{{ .Release.Name }}-hub{{- end -}}
{{- define "tower-hub.labels" -}}
app.kubernetes.io/name: tower-hub
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "tower-hub.selector" -}}
app.kubernetes.io/name: tower-hub
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
