# shellcheck shell=bash
# A throwaway Kafka-protocol broker (tansu, in-memory storage) for tests/run (sourced after
# common.sh, never executed).
#
# tansu is a Rust program, so a machine with the Rust toolchain can build it: it is installed
# once into a cache and reused (`cargo install` is what takes the time, ~20 min on 2 cores beside the workspace build).

SERVICES_TANSU_VERSION=0.6.0

services_tansu_cache() {
  printf '%s\n' "${COUNTERSIGN_TOOLS:-$HOME/.cache/countersign-tools}"
}

# The tansu binary tests use: COUNTERSIGN_TANSU_BIN if set, else the cached install.
services_tansu_bin() {
  if [ -n "${COUNTERSIGN_TANSU_BIN:-}" ]; then
    printf '%s\n' "$COUNTERSIGN_TANSU_BIN"
  else
    printf '%s/bin/tansu\n' "$(services_tansu_cache)"
  fi
}

# Starts `cargo install tansu` in the background (its own target dir in the cache, so it
# neither touches nor locks this workspace's target/). Sets SERVICES_TANSU_INSTALL_PID and
# SERVICES_TANSU_INSTALL_LOG; services_tansu_install_wait collects it.
services_tansu_install_start() {
  local cache
  cache=$(services_tansu_cache)
  mkdir -p "$cache"
  SERVICES_TANSU_INSTALL_LOG="$cache/install-tansu-$SERVICES_TANSU_VERSION.log"
  services_note "tansu $SERVICES_TANSU_VERSION is not in $cache/bin: building it in the" \
    "background while the workspace builds (~20 min on 2 cores, once per machine;" \
    "log: $SERVICES_TANSU_INSTALL_LOG)"
  # Run from the cache directory so this workspace's cargo configuration does not apply; in
  # a session of its own (setsid: its pid is its process group) so that an abort stops the
  # rustc processes too, not only cargo.
  local session=()
  if command -v setsid >/dev/null 2>&1; then
    session=(setsid)
  fi
  # A test broker needs no opt-level 3: opt-level 1 with many codegen units builds it in
  # roughly half the time, which matters on a cold 2-core CI machine.
  (cd "$cache" && CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=256 \
    CARGO_PROFILE_RELEASE_DEBUG=false exec "${session[@]}" cargo install tansu \
    --version "$SERVICES_TANSU_VERSION" --features dynostore --locked --root "$cache" \
    --target-dir "$cache/build") \
    >"$SERVICES_TANSU_INSTALL_LOG" 2>&1 &
  SERVICES_TANSU_INSTALL_PID=$!
  SERVICES_TANSU_INSTALL_GROUP=${#session[@]}
}

# Waits for the background install (bounded by `cargo install` itself; a progress line a
# minute so CI logs show it is alive).
services_tansu_install_wait() {
  local pid=${SERVICES_TANSU_INSTALL_PID:-} waited_s=0 status=0
  [ -n "$pid" ] || return 0
  services_note "waiting for the tansu build (log: $SERVICES_TANSU_INSTALL_LOG)"
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    waited_s=$((waited_s + 5))
    if [ $((waited_s % 60)) -eq 0 ]; then
      printf '   still building tansu (%s min): %s\n' "$((waited_s / 60))" \
        "$(tail -n 1 "$SERVICES_TANSU_INSTALL_LOG" 2>/dev/null | cut -c 1-100)"
    fi
  done
  wait "$pid" || status=$?
  SERVICES_TANSU_INSTALL_PID=
  if [ "$status" -ne 0 ]; then
    services_print_log_tail "cargo install tansu" "$SERVICES_TANSU_INSTALL_LOG" 40
    services_fail "building tansu failed (exit $status)"
    return 1
  fi
  services_note "tansu built: $(services_tansu_bin)"
}

# Stops a background install still running (tests/run interrupted or failed early).
services_tansu_install_abort() {
  local pid=${SERVICES_TANSU_INSTALL_PID:-}
  [ -n "$pid" ] || return 0
  if [ "${SERVICES_TANSU_INSTALL_GROUP:-0}" -eq 1 ]; then
    kill -TERM -- "-$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
  SERVICES_TANSU_INSTALL_PID=
}

# services_start_tansu BIN DIR: starts an in-memory tansu on a free port with its log in DIR,
# waits until that port accepts and is tansu's own socket, and exports KAFKA_BROKERS.
# Sets SERVICES_TANSU_PID for services_stop_tansu.
services_start_tansu() {
  local bin=$1 dir=$2 port attempt waited
  mkdir -p "$dir"
  for attempt in 1 2 3 4 5; do
    port=$(services_pick_port) || return 1
    printf '== attempt %s on port %s\n' "$attempt" "$port" >>"$dir/tansu.log"
    "$bin" broker --storage-engine memory://tansu/ \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" >>"$dir/tansu.log" 2>&1 &
    SERVICES_TANSU_PID=$!
    printf '%s\n' "$SERVICES_TANSU_PID" >"$dir/tansu.pid"
    # 0.1 s polls, 30 s at most; tansu is usually up within milliseconds.
    for waited in $(seq 1 300); do
      if ! kill -0 "$SERVICES_TANSU_PID" 2>/dev/null; then
        break # exited, e.g. the port was taken meanwhile: next attempt
      fi
      if services_port_accepts "$port" && services_port_owned_by "$SERVICES_TANSU_PID" "$port"; then
        export KAFKA_BROKERS="127.0.0.1:$port"
        return 0
      fi
      sleep 0.1
      : "$waited"
    done
    services_stop_tansu
  done
  services_print_log_tail tansu "$dir/tansu.log"
  services_fail "tansu did not start (log above)"
}

services_stop_tansu() {
  local pid=${SERVICES_TANSU_PID:-}
  [ -n "$pid" ] || return 0
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  SERVICES_TANSU_PID=
}
