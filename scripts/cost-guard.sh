#!/usr/bin/env bash
# Instructions per in-process send, counted by callgrind, against the
# committed baseline (bench/send-cost.baseline): fails above +10 %.
# Counts, not seconds, so the machine's speed does not matter.
#
#   scripts/cost-guard.sh            check
#   scripts/cost-guard.sh --update   write the new count as the baseline
#                                    (commit it with the reason)
#
# chat-cost runs twice, with 0 and with $SENDS measured sends after the
# same warm-up, and the difference is divided by $SENDS: start-up costs the
# same in both runs and drops out. It is the test profile's build (our code
# unoptimised, dependencies at opt-level 1, what `cargo test` builds
# anyway): release counts are lower, but a regression of work shows in both.
set -euo pipefail
cd "$(dirname "$0")/.."

SENDS="${SENDS:-400}"
LIMIT_PERCENT=10
baseline_file=bench/send-cost.baseline

# Incremental builds split code differently, so counts differ by a few
# per cent: always count what the test command builds (it sets 0 too).
export CARGO_INCREMENTAL=0
command -v valgrind >/dev/null || { echo "cost-guard: valgrind missing (Debian: valgrind)" >&2; exit 1; }
cargo build -p chat-bench --bin chat-cost --locked -q
bin="${CARGO_TARGET_DIR:-target}/debug/chat-cost"

# A plain run first: every send acked, none refused, or the counts mean
# nothing.
"$bin" --verify --sends "$SENDS"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Instructions of one run, less quanta's clock calibration: it spins until
# enough wall time has passed, so its count depends on the machine's speed.
count() {
  local out="$work/cg.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" --sends "$1" >"$work/log.$1" 2>&1 ||
    { cat "$work/log.$1" >&2; exit 1; }
  local total calibration
  total=$(callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
  calibration=$(callgrind_annotate --inclusive=yes "$out" 2>/dev/null |
    awk '/quanta::Calibration::calibrate / {gsub(",", "", $1); print $1; exit}')
  echo $((total - ${calibration:-0}))
}

idle=$(count 0)
busy=$(count "$SENDS")
per_send=$(((busy - idle) / SENDS))

if [ "${1:-}" = "--update" ]; then
  {
    echo "# Instructions per in-process send (scripts/cost-guard.sh, test profile)."
    echo "# Change it only on purpose, in the commit that changes the cost, saying why."
    echo "instructions_per_send $per_send"
  } >"$baseline_file"
  echo "cost-guard: baseline now $per_send instructions per send"
  exit 0
fi

baseline=$(awk '$1 == "instructions_per_send" {print $2}' "$baseline_file")
ratio=$(awk -v a="$per_send" -v b="$baseline" 'BEGIN {printf "%.3f", a / b}')
echo "cost-guard: $per_send instructions per send; baseline $baseline (ratio $ratio, limit +$LIMIT_PERCENT %)"
if [ "$per_send" -gt $((baseline + baseline * LIMIT_PERCENT / 100)) ]; then
  echo "cost-guard: a send costs more than $LIMIT_PERCENT % over the baseline." >&2
  echo "  Profile: valgrind --tool=callgrind $bin --sends $SENDS; callgrind_annotate callgrind.out.*" >&2
  echo "  If the cost is wanted, run scripts/cost-guard.sh --update and say why in the commit." >&2
  exit 1
fi
if [ "$per_send" -lt $((baseline - baseline * LIMIT_PERCENT / 100)) ]; then
  echo "cost-guard: more than $LIMIT_PERCENT % under the baseline: lower it (--update) so the guard keeps its edge"
fi
