{{/*
Names, labels and the checks that values.schema.json cannot express.
*/}}

{{/* The chart's name (nameOverride). */}}
{{- define "pwt.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's objects are named after it: pod-webhook-tracker for the release of that name. */}}
{{- define "pwt.fullname" -}}
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

{{/* The injector's Deployment, Service, budget and certificate. */}}
{{- define "pwt.injector.fullname" -}}
{{- printf "%s-injector" (include "pwt.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{/* The MutatingWebhookConfiguration (cluster-scoped). */}}
{{- define "pwt.webhookConfiguration" -}}
{{- include "pwt.fullname" . -}}
{{- end -}}

{{/* The webhook's name, as the API server quotes it when it refuses a pod. */}}
{{- define "pwt.webhookName" -}}
inject.pod-webhook-tracker.io
{{- end -}}

{{/* The labels every object carries besides its component's. */}}
{{- define "pwt.commonLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{/* The injector's selector labels (its name as in manifests/injector, and the release). */}}
{{- define "pwt.injector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pwt.name" . }}-injector
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pwt.injector.labels" -}}
{{ include "pwt.commonLabels" . }}
app.kubernetes.io/name: {{ include "pwt.name" . }}-injector
{{- end -}}

{{/* The standalone service's selector labels (as in manifests/standalone, and the release). */}}
{{- define "pwt.standalone.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pwt.name" . }}
app.kubernetes.io/component: standalone
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pwt.standalone.labels" -}}
{{ include "pwt.commonLabels" . }}
app.kubernetes.io/name: {{ include "pwt.name" . }}
app.kubernetes.io/component: standalone
{{- end -}}

{{/* The policy's labels (as in manifests/policy). */}}
{{- define "pwt.policy.labels" -}}
{{ include "pwt.commonLabels" . }}
app.kubernetes.io/name: {{ include "pwt.name" . }}
app.kubernetes.io/component: sidecar
{{- end -}}

{{/* The image: repository:tag, the tag defaulting to the chart's appVersion. */}}
{{- define "pwt.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The injector's account. */}}
{{- define "pwt.injector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "pwt.injector.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: the injector's existing service account (serviceAccount.create is false)" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The standalone service's account. */}}
{{- define "pwt.standalone.serviceAccountName" -}}
{{- if .Values.standalone.serviceAccount.create -}}
{{- default (include "pwt.fullname" .) .Values.standalone.serviceAccount.name -}}
{{- else -}}
{{- required "standalone.serviceAccount.name: the standalone service's existing service account (standalone.serviceAccount.create is false)" .Values.standalone.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* How many injectors run: 2 with cert-manager, 1 self-signed (each start makes a new CA). */}}
{{- define "pwt.injector.replicas" -}}
{{- if .Values.certManager.enabled -}}
{{- if kindIs "invalid" .Values.replicaCount }}2{{ else }}{{ .Values.replicaCount }}{{ end -}}
{{- else -}}
{{- if and (not (kindIs "invalid" .Values.replicaCount)) (ne (int .Values.replicaCount) 1) -}}
{{- fail (printf "replicaCount: %v injectors cannot run with a self-signed certificate: each start makes a new CA and writes it into the webhook configuration, so the API server would trust one replica only. Leave replicaCount unset (one replica), or set certManager.enabled=true for several" .Values.replicaCount) -}}
{{- end -}}
1
{{- end -}}
{{- end -}}

{{/* The standalone service's authentication: serviceaccount by default for scope cluster. */}}
{{- define "pwt.standalone.authenticate" -}}
{{- if .Values.standalone.authenticate -}}
{{- .Values.standalone.authenticate -}}
{{- else if eq .Values.standalone.scope "cluster" -}}
serviceaccount
{{- else -}}
none
{{- end -}}
{{- end -}}

{{/* The standalone service's count label. */}}
{{- define "pwt.standalone.label" -}}
{{- default "active-jobs" .Values.standalone.label -}}
{{- end -}}

{{/* Whether the standalone service serves HTTPS ("true" or ""): by default when it authenticates. */}}
{{- define "pwt.standalone.tls" -}}
{{- $tls := .Values.standalone.tls.enabled -}}
{{- if kindIs "invalid" $tls -}}
{{- $tls = eq (include "pwt.standalone.authenticate" .) "serviceaccount" -}}
{{- end -}}
{{- if $tls -}}
{{- if not (or .Values.certManager.enabled .Values.standalone.tls.secretName) -}}
{{- fail (printf "standalone: HTTPS is on (callers' tokens are credentials, standalone.authenticate is %s), and its certificate needs a source: set certManager.enabled=true (cert-manager issues it), or standalone.tls.secretName to an existing Secret with tls.crt and tls.key, or standalone.tls.enabled=false to serve plain HTTP (the tracker then warns at start)" (include "pwt.standalone.authenticate" .)) -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The Secret the standalone service's certificate is in. */}}
{{- define "pwt.standalone.tlsSecret" -}}
{{- default (printf "%s-tls" (include "pwt.fullname" .)) .Values.standalone.tls.secretName -}}
{{- end -}}

{{/*
Whether helm read the API versions from a cluster (install, upgrade, template --dry-run=server):
a cluster's discovery lists each resource (v1/Namespace); `helm template` alone knows only the
built-in group versions, and what --api-versions adds. No request is made, so a user who may
not read namespaces renders the same.
*/}}
{{- define "pwt.connected" -}}
{{- if .Capabilities.APIVersions.Has "v1/Namespace" -}}true{{- end -}}
{{- end -}}

{{/* Refuses, with what to do, to install objects of a CRD the cluster does not serve. */}}
{{- define "pwt.requireApi" -}}
{{- $ := index . 0 -}}
{{- $api := index . 1 -}}
{{- $why := index . 2 -}}
{{- if and (include "pwt.connected" $) (not ($.Capabilities.APIVersions.Has $api)) -}}
{{- fail (printf "%s: the cluster does not serve %s. Install its CRDs first, or turn the option off" $why $api) -}}
{{- end -}}
{{- end -}}

{{/* The checks that span several values. */}}
{{- define "pwt.validate" -}}
{{- if and .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled -}}
{{- fail "metrics: serviceMonitor and podMonitor both scrape the same /metrics; enable one of them" -}}
{{- end -}}
{{- if eq (int .Values.injection.trackerPort) (int .Values.injection.adminPort) -}}
{{- fail (printf "injection: trackerPort and adminPort are both %v; the injected tracker needs two ports" .Values.injection.trackerPort) -}}
{{- end -}}
{{- if not (or .Values.injector.enabled .Values.standalone.enabled .Values.policy.enabled) -}}
{{- fail "nothing to install: injector.enabled, standalone.enabled and policy.enabled are all false" -}}
{{- end -}}
{{- if and .Values.policy.enabled (semverCompare "<1.30.0-0" .Capabilities.KubeVersion.Version) -}}
{{- fail (printf "policy.enabled: Kubernetes %s does not put the pod's name into service-account tokens (1.30+), so the policy would refuse every tracker's write; set policy.enabled=false" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
{{- if .Values.certManager.enabled -}}
{{- include "pwt.requireApi" (list . "cert-manager.io/v1/Certificate" "certManager.enabled (cert-manager issues the certificates)") -}}
{{- end -}}
{{- if or .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled .Values.metrics.prometheusRule.enabled -}}
{{- include "pwt.requireApi" (list . "monitoring.coreos.com/v1" "metrics (the Prometheus operator's ServiceMonitor, PodMonitor and PrometheusRule)") -}}
{{- end -}}
{{- end -}}

{{/* Whether the standalone service serves its admin listener (probes and /metrics for Prometheus). */}}
{{- define "pwt.standalone.admin" -}}
{{- if or .Values.metrics.serviceMonitor.enabled .Values.metrics.podMonitor.enabled -}}true{{- end -}}
{{- end -}}

{{/* A cert-manager issuerRef: the configured one, or the component's own self-signed Issuer. */}}
{{- define "pwt.issuerRef" -}}
{{- $ := index . 0 -}}
{{- $own := index . 1 -}}
{{- if $.Values.certManager.issuerRef -}}
{{- toYaml $.Values.certManager.issuerRef -}}
{{- else -}}
name: {{ $own }}
kind: Issuer
{{- end -}}
{{- end -}}

{{/* Pod scheduling settings: the component's own (standalone.*) or the top-level ones. */}}
{{- define "pwt.scheduling" -}}
{{- $ := index . 0 -}}
{{- $own := index . 1 -}}
{{- $selector := index . 2 -}}
{{- with (default $.Values.nodeSelector $own.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $.Values.tolerations $own.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $.Values.affinity $own.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with (default $.Values.priorityClassName $own.priorityClassName) }}
priorityClassName: {{ . }}
{{- end }}
{{- if $.Values.spreadAcrossNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- $selector | nindent 8 }}
{{- end }}
{{- end -}}

{{/* A CEL list of strings: ['a', 'b']. */}}
{{- define "pwt.celList" -}}
[{{ range $i, $item := . }}{{ if $i }}, {{ end }}'{{ $item }}'{{ end }}]
{{- end -}}
