# shellcheck shell=bash
# Headless Chromium and Playwright for the browser test of the auditor console
# (tests/e2e/console.rs runs tests/browser/console.mjs), for tests/run (sourced after
# common.sh and tansu.sh, never executed).
#
# - Chromium: Debian's package (`/usr/bin/chromium`), installed with apt-get when missing
#   (needs root, as in CI). Playwright never downloads a browser here: it drives this one.
# - playwright-core: from the npm registry, an exact version, installed once into the tools
#   cache next to tansu (`$cache/node/node_modules/playwright-core`) and reused.
#
# Exported for the test: COUNTERSIGN_CHROMIUM, COUNTERSIGN_PLAYWRIGHT_DIR, COUNTERSIGN_NODE.
# Measured on the 2-core development machine: apt-get update + install chromium ~20 s,
# npm install playwright-core ~2 s; both run in the background while the workspace builds.

SERVICES_PLAYWRIGHT_VERSION=1.65.1
# playwright-core 1.65 declares "engines": {"node": ">=20"}.
SERVICES_NODE_MAJOR_MIN=20

services_chromium_bin() {
  printf '%s\n' "${COUNTERSIGN_CHROMIUM:-/usr/bin/chromium}"
}

# The npm prefix playwright-core is installed under (`require` resolves from it).
services_playwright_dir() {
  if [ -n "${COUNTERSIGN_PLAYWRIGHT_DIR:-}" ]; then
    printf '%s\n' "$COUNTERSIGN_PLAYWRIGHT_DIR"
  else
    printf '%s/node\n' "$(services_tansu_cache)"
  fi
}

# Whether the pinned playwright-core is installed under the prefix.
services_playwright_present() {
  local manifest
  manifest="$(services_playwright_dir)/node_modules/playwright-core/package.json"
  [ -f "$manifest" ] &&
    grep -q "\"version\": \"$SERVICES_PLAYWRIGHT_VERSION\"" "$manifest"
}

services_chromium_present() {
  [ -x "$(services_chromium_bin)" ]
}

# The node binary, if it is recent enough for playwright-core.
services_node_bin() {
  local node major
  node=${COUNTERSIGN_NODE:-$(command -v node 2>/dev/null || true)}
  [ -n "$node" ] && [ -x "$node" ] || return 1
  major=$("$node" -p 'process.versions.node.split(".")[0]' 2>/dev/null) || return 1
  [ "$major" -ge "$SERVICES_NODE_MAJOR_MIN" ] 2>/dev/null || return 1
  printf '%s\n' "$node"
}

# What is missing, one word each (chromium, playwright), on stdout.
services_browser_missing() {
  services_chromium_present || printf 'chromium\n'
  services_playwright_present || printf 'playwright\n'
}

# The installs the browser test needs, one after the other (apt-get, then npm). Runs in the
# background job started below; its output goes to the log.
services_browser_install() {
  local what=$1 cache=$2
  set -euo pipefail
  if [[ " $what " == *" chromium "* ]]; then
    echo "== apt-get install chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends chromium
    [ -x /usr/bin/chromium ]
    /usr/bin/chromium --version
  fi
  if [[ " $what " == *" playwright "* ]]; then
    echo "== npm install playwright-core@$SERVICES_PLAYWRIGHT_VERSION"
    mkdir -p "$cache"
    # playwright-core has no install script and never fetches a browser; the variable is a
    # belt for the braces.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$cache" --no-audit --no-fund \
      --loglevel=error "playwright-core@$SERVICES_PLAYWRIGHT_VERSION"
  fi
}

# Checks what the browser test needs and starts installing what is missing in the
# background (SERVICES_BROWSER_INSTALL_PID, collected by services_browser_install_wait).
# Fails at once, before the long build, when something cannot be installed here and CI=true.
services_browser_install_start() {
  local missing cache problem=
  if ! services_node_bin >/dev/null; then
    problem="Node.js >= $SERVICES_NODE_MAJOR_MIN is not on PATH (node runs tests/browser/console.mjs)"
  fi
  missing=$(services_browser_missing | tr '\n' ' ')
  if [ -z "$problem" ] && [[ " $missing " == *" chromium "* ]] && [ -n "${COUNTERSIGN_CHROMIUM:-}" ]; then
    problem="COUNTERSIGN_CHROMIUM=$COUNTERSIGN_CHROMIUM is not an executable"
  fi
  if [ -z "$problem" ] && [[ " $missing " == *" chromium "* ]] &&
    { ! services_is_root || ! command -v apt-get >/dev/null 2>&1; }; then
    problem="no Chromium at $(services_chromium_bin), and installing it needs root and apt-get (apt-get install chromium)"
  fi
  if [ -z "$problem" ] && [[ " $missing " == *" playwright "* ]] && ! command -v npm >/dev/null 2>&1; then
    problem="playwright-core is not installed and npm is not on PATH"
  fi
  if [ -n "$problem" ]; then
    if services_in_ci; then
      services_fail "$problem. The browser test of the auditor console needs it."
      return 1
    fi
    services_note "$problem: the browser test will print a note and return"
    return 0
  fi
  services_browser_export
  [ -n "${missing// /}" ] || return 0

  cache=$(services_playwright_dir)
  mkdir -p "$(services_tansu_cache)"
  SERVICES_BROWSER_INSTALL_LOG="$(services_tansu_cache)/install-browser.log"
  services_note "installing for the browser test in the background: ${missing% }" \
    "(chromium from Debian, playwright-core $SERVICES_PLAYWRIGHT_VERSION from npm into $cache;" \
    "log: $SERVICES_BROWSER_INSTALL_LOG)"
  SERVICES_BROWSER_INSTALL_STARTED_MS=$(services_now_ms)
  (services_browser_install "$missing" "$cache") >"$SERVICES_BROWSER_INSTALL_LOG" 2>&1 &
  SERVICES_BROWSER_INSTALL_PID=$!
}

# Waits for the background install; prints its log and fails when it failed.
services_browser_install_wait() {
  local pid=${SERVICES_BROWSER_INSTALL_PID:-} status=0 waited_s=0
  [ -n "$pid" ] || return 0
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    waited_s=$((waited_s + 1))
    if [ $((waited_s % 60)) -eq 0 ]; then
      printf '   still installing the browser test tools (%s min): %s\n' "$((waited_s / 60))" \
        "$(tail -n 1 "$SERVICES_BROWSER_INSTALL_LOG" 2>/dev/null | cut -c 1-100)"
    fi
  done
  wait "$pid" || status=$?
  SERVICES_BROWSER_INSTALL_PID=
  if [ "$status" -ne 0 ] || ! services_chromium_present || ! services_playwright_present; then
    services_print_log_tail "browser test tools install" "$SERVICES_BROWSER_INSTALL_LOG" 40
    services_fail "installing Chromium (apt-get install chromium) or playwright-core" \
      "$SERVICES_PLAYWRIGHT_VERSION (npm) failed (exit $status); log above"
    return 1
  fi
  services_note "browser test tools installed in" \
    "$(($(services_now_ms) - SERVICES_BROWSER_INSTALL_STARTED_MS)) ms:" \
    "$("$(services_chromium_bin)" --version 2>/dev/null), playwright-core $SERVICES_PLAYWRIGHT_VERSION"
}

# Leaves a running install alone but waits for it: killing apt-get or dpkg halfway can leave
# the machine's package database half-configured, which is worse than a minute's wait.
services_browser_install_abort() {
  local pid=${SERVICES_BROWSER_INSTALL_PID:-}
  [ -n "$pid" ] || return 0
  wait "$pid" 2>/dev/null || true
  SERVICES_BROWSER_INSTALL_PID=
}

services_browser_export() {
  COUNTERSIGN_CHROMIUM=$(services_chromium_bin)
  COUNTERSIGN_PLAYWRIGHT_DIR=$(services_playwright_dir)
  COUNTERSIGN_NODE=$(services_node_bin)
  export COUNTERSIGN_CHROMIUM COUNTERSIGN_PLAYWRIGHT_DIR COUNTERSIGN_NODE
}
