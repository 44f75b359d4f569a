# shellcheck shell=bash
# Helpers shared by the throwaway services of tests/run (sourced, never executed).
#
# Every wait here is bounded: a service that does not come up fails the run with its log,
# it never hangs CI.

services_note() {
  printf '== %s\n' "$*"
}

services_fail() {
  printf 'tests/run: %s\n' "$*" >&2
  return 1
}

services_is_root() {
  [ "$(id -u)" -eq 0 ]
}

# CI=true (or 1): a test that needs a service must fail when the service is missing.
services_in_ci() {
  case "${CI:-}" in
    [Tt][Rr][Uu][Ee] | 1) return 0 ;;
    *) return 1 ;;
  esac
}

# PostgreSQL refuses to run as root, and CI runs as root: run its commands as the `postgres`
# OS user then. Not root: run them as ourselves.
services_as_postgres() {
  if ! services_is_root; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u postgres -- "$@"
  else
    su -s /bin/bash postgres -c "$(printf '%q ' "$@")"
  fi
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
services_port_accepts() {
  local port=$1
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
}

# A port that nothing listens on now, below Linux's ephemeral range (32768–60999) so that
# outgoing connections do not take it meanwhile. The caller still handles losing a race.
services_pick_port() {
  local port attempt
  for attempt in $(seq 1 50); do
    port=$((20000 + RANDOM % 12000))
    if ! services_port_accepts "$port"; then
      printf '%s\n' "$port"
      return 0
    fi
    : "$attempt"
  done
  services_fail "no free TCP port found in 50 tries"
}

# Whether process PID owns the listening TCP socket on PORT (Linux /proc). A connect alone
# is not proof: another process (another test run on this machine) may listen on that port
# while ours failed to bind. Without /proc, the caller's liveness check has to do.
services_port_owned_by() {
  local pid=$1 port=$2 hex inode fd
  [ -r /proc/net/tcp ] || return 0
  hex=$(printf ':%04X' "$port")
  while IFS= read -r inode; do
    for fd in "/proc/$pid/fd/"*; do
      if [ "$(readlink "$fd" 2>/dev/null)" = "socket:[$inode]" ]; then
        return 0
      fi
    done
  done < <(awk -v port="$hex" '$4 == "0A" && substr($2, length($2) - 4) == port { print $10 }' \
    /proc/net/tcp /proc/net/tcp6 2>/dev/null)
  return 1
}

# Prints the last lines of a log file under a header, if it exists.
services_print_log_tail() {
  local name=$1 file=$2 lines=${3:-60}
  if [ -f "$file" ]; then
    printf '\n----- %s (last %s lines of %s)\n' "$name" "$lines" "$file"
    tail -n "$lines" "$file" || true
    printf -- '----- end of %s\n' "$name"
  fi
}

# Seconds since the epoch with milliseconds, for the start-up timings printed by tests/run.
services_now_ms() {
  local now
  now=$(date +%s%N)
  printf '%s\n' "$((now / 1000000))"
}

# Stops private instances that tests started through tests/e2e/services.rs under ROOT
# (COUNTERSIGN_SERVICES_DIR) and could not stop themselves, e.g. because the test process
# was killed: `pg-*/data` clusters and `tansu-*/tansu.pid` brokers.
services_sweep_private() {
  local root=$1 bindir=${2:-} data pidfile pid
  [ -d "$root" ] || return 0
  for data in "$root"/pg-*/data; do
    [ -f "$data/postmaster.pid" ] || continue
    if [ -z "$bindir" ] || ! (cd "$root" && services_as_postgres "$bindir/pg_ctl" -D "$data" \
      -m immediate -w -t 30 stop) >/dev/null 2>&1; then
      pid=$(head -n 1 "$data/postmaster.pid" 2>/dev/null || true)
      if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = postgres ]; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
  done
  for pidfile in "$root"/tansu-*/tansu.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    # Only if that pid is still a tansu: pids are reused.
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = tansu ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}
