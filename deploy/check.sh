#!/usr/bin/env bash
# Offline checks of everything under deploy/ that is not Rust: no cluster, no Docker engine, no
# network (the tools come from deploy/local/ops-tools.sh, installed first if missing).
#
#   deploy/check.sh           every check below, in order; exits 1 on the first failure
#
#   1. Prometheus rules   promtool check rules + promtool test rules (deploy/prometheus/tests),
#                         deploy/prometheus/check.py (severities, runbook anchors, metric names,
#                         a firing and a not-firing case per alert)
#   2. Grafana dashboard  deploy/grafana/evalstream.json is what build.py builds, valid JSON
#   3. Kubernetes         kustomize renders every overlay; kubernetes-validate --strict checks
#                         every rendered object against the Kubernetes schemas of the oldest and
#                         newest versions we support; deploy/k8s/check.py checks what schemas
#                         cannot (processors, names, security settings); and a broken manifest
#                         must fail validation (the validator is really validating)
#   4. Container          hadolint on the Dockerfile; `docker-compose config` parses and
#                         validates the compose file (no engine needed); deploy/compose/check.py
#                         checks its services and environment against the processors and config
# The end-to-end alert test (integration-tests/tests/alerts.rs) needs the broker and runs with the
# other broker tests.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/local/ops-tools.sh install
BIN="$(deploy/local/ops-tools.sh bin)"
PY="$BIN/ops-python"
# Oldest Kubernetes the manifests need (CronJob timeZone, topologySpreadConstraints
# matchLabelKeys) and the newest schemas kubernetes-validate bundles.
K8S_VERSIONS=(1.30.0 1.37.0)

echo "== prometheus rules"
"$BIN/promtool" check rules deploy/prometheus/alerts.yml
"$BIN/promtool" test rules deploy/prometheus/tests/*.yml
"$PY" deploy/prometheus/check.py

echo "== grafana dashboard"
"$PY" deploy/grafana/build.py --check

echo "== kubernetes manifests"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in deploy/k8s/overlays/*/; do
    name="$(basename "$overlay")"
    "$BIN/kustomize" build "$overlay" >"$rendered/$name.yaml"
    for v in "${K8S_VERSIONS[@]}"; do
        "$BIN/kubernetes-validate" --strict --quiet -k "$v" "$rendered/$name.yaml"
    done
    echo "$name: $(grep -c '^kind:' "$rendered/$name.yaml") objects valid against Kubernetes ${K8S_VERSIONS[*]}"
done
"$PY" deploy/k8s/check.py "$rendered"
# A field that does not exist must be refused, or the step above proves nothing.
cat >"$rendered/broken.yaml" <<'EOF'
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: broken}
spec:
  serviceName: broken
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers: [{name: c, image: i, livenesProbe: {httpGet: {path: /health, port: 8080}}}]
EOF
if "$BIN/kubernetes-validate" --strict --quiet -k "${K8S_VERSIONS[0]}" "$rendered/broken.yaml" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a misspelt field: validation is not working" >&2
    exit 1
fi

echo "== container image and compose"
"$BIN/hadolint" Dockerfile
"$BIN/docker-compose" -f deploy/compose/compose.yaml config --quiet
"$PY" deploy/compose/check.py
echo "deploy checks passed"
