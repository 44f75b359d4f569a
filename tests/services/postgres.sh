# shellcheck shell=bash
# A throwaway PostgreSQL cluster for tests/run (sourced after common.sh, never executed).
#
# Local and disposable, so `-A trust` on 127.0.0.1 only, with the unix socket in the cluster's
# own directory; but `fsync` stays on because tests measure durability against it.

# Prints the directory holding PostgreSQL's server binaries (initdb, pg_ctl, postgres,
# pg_isready): COUNTERSIGN_PG_BINDIR if set (and then it must be right), else PostgreSQL 15 at
# its Debian path, else what pg_config reports, else the newest /usr/lib/postgresql/*/bin,
# else initdb on PATH.
services_pg_bindir() {
  local candidate
  if [ -n "${COUNTERSIGN_PG_BINDIR:-}" ]; then
    if [ -x "$COUNTERSIGN_PG_BINDIR/initdb" ] && [ -x "$COUNTERSIGN_PG_BINDIR/pg_ctl" ]; then
      printf '%s\n' "$COUNTERSIGN_PG_BINDIR"
      return 0
    fi
    services_fail "COUNTERSIGN_PG_BINDIR=$COUNTERSIGN_PG_BINDIR has no initdb/pg_ctl"
    return 1
  fi
  local candidates=(/usr/lib/postgresql/15/bin)
  if command -v pg_config >/dev/null 2>&1; then
    candidates+=("$(pg_config --bindir 2>/dev/null || true)")
  fi
  while IFS= read -r candidate; do
    candidates+=("$candidate")
  done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r)
  if command -v initdb >/dev/null 2>&1; then
    candidates+=("$(dirname "$(command -v initdb)")")
  fi
  for candidate in "${candidates[@]}"; do
    if [ -n "$candidate" ] && [ -x "$candidate/initdb" ] && [ -x "$candidate/pg_ctl" ]; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# services_start_postgres BINDIR DIR: creates DIR (owned by the user that runs PostgreSQL),
# a cluster in DIR/data, starts it on a free port and exports DATABASE_URL (the `postgres`
# superuser: tests create their own databases and roles). Sets SERVICES_PG_DIR for
# services_stop_postgres.
services_start_postgres() {
  local bindir=$1 dir=$2 port attempt
  mkdir -m 700 "$dir"
  if services_is_root; then
    chown postgres:postgres "$dir"
  fi
  SERVICES_PG_DIR=$dir
  SERVICES_PG_BINDIR=$bindir
  # `--no-sync` only skips flushing initdb's own bootstrap files (a throwaway cluster); the
  # server itself runs with fsync on.
  if ! (cd "$dir" && services_as_postgres "$bindir/initdb" -D "$dir/data" -U postgres \
    -A trust -E UTF8 --locale=C --no-instructions --no-sync) >"$dir/initdb.log" 2>&1; then
    services_print_log_tail initdb "$dir/initdb.log"
    services_fail "initdb failed (log above)"
    return 1
  fi
  # A port can be taken between picking and binding: then pg_ctl fails fast, try another.
  for attempt in 1 2 3 4 5; do
    port=$(services_pick_port) || return 1
    if (cd "$dir" && services_as_postgres "$bindir/pg_ctl" -D "$dir/data" \
      -l "$dir/postgres.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k '$dir' -c fsync=on -c max_connections=200" \
      start) >>"$dir/pg_ctl.log" 2>&1; then
      if "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port" -U postgres -d postgres -t 10; then
        export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
        return 0
      fi
      services_stop_postgres
    fi
    printf 'PostgreSQL did not start on port %s (attempt %s), retrying\n' "$port" "$attempt" \
      >>"$dir/pg_ctl.log"
  done
  services_print_log_tail pg_ctl "$dir/pg_ctl.log"
  services_print_log_tail postgres "$dir/postgres.log"
  services_fail "PostgreSQL did not start (logs above)"
}

# Stops the cluster started by services_start_postgres without a checkpoint (it is thrown
# away), and makes sure no postmaster outlives the run.
services_stop_postgres() {
  local dir=${SERVICES_PG_DIR:-} pid
  [ -n "$dir" ] && [ -f "$dir/data/postmaster.pid" ] || return 0
  if ! (cd "$dir" && services_as_postgres "$SERVICES_PG_BINDIR/pg_ctl" -D "$dir/data" \
    -m immediate -w -t 30 stop) >>"$dir/pg_ctl.log" 2>&1; then
    pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    # Only if that pid is still a postgres: a stale pid file may name a reused pid.
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = postgres ]; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
}
