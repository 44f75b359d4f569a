#!/usr/bin/env bash
# Runs every Suite of a gatekeeper-library checkout with `countersign gatekeeper verify`, as
# the library's CI runs `gator verify ./... --enable-k8s-native-validation=false` from its
# root, and prints the counts and every test or case that did not pass. The library's CI is
# green at the commit compared, so the reference verdict is "every case passes".
#
# Usage: tests/gatekeeper-library/compare.sh /path/to/gatekeeper-library [OUTPUT_FILE]
#   COUNTERSIGN=/path/to/countersign  binary to use (default: target/release/countersign,
#                                     built with `cargo build --release -p countersign`).
# Fetches nothing. Exit status: 0 when every case passed, 1 otherwise, 2 on usage errors.
set -euo pipefail

if [[ $# -lt 1 || ! -d "$1" ]]; then
  echo "usage: $0 /path/to/gatekeeper-library [OUTPUT_FILE]" >&2
  exit 2
fi
library=$(cd "$1" && pwd)
repository=$(cd "$(dirname "$0")/../.." && pwd)
output=${2:-$(mktemp)}
binary=${COUNTERSIGN:-$repository/target/release/countersign}
if [[ -z "${COUNTERSIGN:-}" ]]; then
  (cd "$repository" && cargo build --release -q -p countersign)
fi

commit=$(git -C "$library" rev-parse HEAD 2>/dev/null || echo "unknown (not a git checkout)")
echo "library: $library"
echo "commit:  $commit"

status=0
started=$(date +%s)
(cd "$library" && "$binary" gatekeeper verify -v ./...) >"$output" || status=$?
elapsed=$(( $(date +%s) - started ))
if [[ $status -gt 1 ]]; then
  echo "countersign gatekeeper verify failed to run (exit $status); output in $output" >&2
  exit 2
fi

# Go-test-style verbose output: tests start at column 0, cases are indented by four spaces.
suites=$(grep -cE '^(ok|FAIL)'$'\t' "$output" || true)
suites_failed=$(grep -cE '^FAIL'$'\t' "$output" || true)
tests=$(grep -c '^=== RUN   ' "$output" || true)
tests_failed=$(grep -c '^--- FAIL: ' "$output" || true)
cases=$(grep -c '^    === RUN   ' "$output" || true)
cases_failed=$(grep -c '^    --- FAIL: ' "$output" || true)
skipped=$(grep -cE '^( {4})?=== SKIP  ' "$output" || true)

echo "suites:  $suites ($suites_failed failed)"
echo "tests:   $tests ($tests_failed failed)"
echo "cases:   $cases ($cases_failed failed)"
echo "skipped: $skipped"
echo "time:    ${elapsed}s"
echo "output:  $output"

if [[ $suites_failed -gt 0 ]]; then
  echo
  echo "Not passing (suite: test [/ case]: reason):"
  # Failures are printed before their suite's FAIL line: buffer them until the suite is known.
  awk '
    expect_case_reason {
      reason = $0; sub(/^ +/, "", reason)
      pending[++n] = test " / " failed_case ": " reason
      expect_case_reason = 0
      next
    }
    expect_test_reason {
      expect_test_reason = 0
      if ($0 ~ /^  [^ ]/) {
        reason = $0; sub(/^ +/, "", reason)
        pending[++n] = failed_test ": " reason
        next
      }
    }
    /^=== RUN   / { test = substr($0, 11) }
    /^    --- FAIL: / {
      failed_case = substr($0, 15); sub(/\t.*/, "", failed_case)
      expect_case_reason = 1
    }
    /^--- FAIL: / {
      failed_test = substr($0, 11); sub(/\t.*/, "", failed_test)
      expect_test_reason = 1
    }
    /^(ok|FAIL)\t/ {
      split($0, fields, "\t")
      for (i = 1; i <= n; i++) print "  " fields[2] ": " pending[i]
      n = 0
    }
  ' "$output"
fi
exit "$status"
