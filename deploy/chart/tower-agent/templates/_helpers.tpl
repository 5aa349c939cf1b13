{{- define "tower-agent.labels" -}}
app.kubernetes.io/name: tower-agent
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "tower-agent.secret" -}}{{ .Values.existingSecret | default "tower-agent" }}{{- end -}}
