{{/* The chart's name. */}}
{{- define "apipool.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the objects' names. */}}
{{- define "apipool.fullname" -}}
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

{{- define "apipool.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "apipool.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apipool.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "apipool.labels" -}}
helm.sh/chart: {{ include "apipool.chart" . }}
{{ include "apipool.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "apipool.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "apipool.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "apipool.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
The admin listener's scheme: HTTPS when config.admin.tls is set.
*/}}
{{- define "apipool.adminScheme" -}}
{{- if and .Values.config.admin .Values.config.admin.tls -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/*
apipool.yaml: config as written in the values, with listen and
admin.listen from ports, and redis and recorder from the redis and
clickhouse values when these are set. Fails on settings given twice.
*/}}
{{- define "apipool.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if hasKey $cfg "listen" -}}
{{- fail "config.listen: the chart writes it from ports.proxy; set ports.proxy instead" -}}
{{- end -}}
{{- $_ := set $cfg "listen" (printf ":%d" (int .Values.ports.proxy)) -}}
{{- $admin := dict -}}
{{- if $cfg.admin -}}{{- $admin = $cfg.admin -}}{{- end -}}
{{- if hasKey $admin "listen" -}}
{{- fail "config.admin.listen: the chart writes it from ports.admin; set ports.admin instead" -}}
{{- end -}}
{{- if eq (int .Values.ports.proxy) (int .Values.ports.admin) -}}
{{- fail "ports.proxy and ports.admin must differ" -}}
{{- end -}}
{{- $_ = set $admin "listen" (printf ":%d" (int .Values.ports.admin)) -}}
{{- $_ = set $cfg "admin" $admin -}}
{{- with .Values.redis -}}
{{- if .addr -}}
{{- if hasKey $cfg "redis" -}}
{{- fail "redis: given both as redis.addr and as config.redis; keep one" -}}
{{- end -}}
{{- $r := dict "addr" .addr -}}
{{- with .username -}}{{- $_ = set $r "username" . -}}{{- end -}}
{{- if .db -}}{{- $_ = set $r "db" (int .db) -}}{{- end -}}
{{- with .prefix -}}{{- $_ = set $r "prefix" . -}}{{- end -}}
{{- if .passwordSecret.name -}}{{- $_ = set $r "password" "${APIPOOL_REDIS_PASSWORD}" -}}{{- end -}}
{{- $_ = set $cfg "redis" $r -}}
{{- end -}}
{{- end -}}
{{- with .Values.clickhouse -}}
{{- if .addrs -}}
{{- if hasKey $cfg "recorder" -}}
{{- fail "recorder: given both as clickhouse.addrs and as config.recorder; keep one" -}}
{{- end -}}
{{- $ch := dict "addrs" .addrs -}}
{{- with .database -}}{{- $_ = set $ch "database" . -}}{{- end -}}
{{- with .table -}}{{- $_ = set $ch "table" . -}}{{- end -}}
{{- with .username -}}{{- $_ = set $ch "username" . -}}{{- end -}}
{{- with .spillDir -}}{{- $_ = set $ch "spill_dir" . -}}{{- end -}}
{{- if .passwordSecret.name -}}{{- $_ = set $ch "password" "${APIPOOL_CLICKHOUSE_PASSWORD}" -}}{{- end -}}
{{- $_ = set $cfg "recorder" (dict "type" "clickhouse" "clickhouse" $ch) -}}
{{- end -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}
