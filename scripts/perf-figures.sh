#!/usr/bin/env bash
# The performance document's figures, from one run on one commit: runs
# burst (also against chatd's broker alone), steady, idle-scale and ws
# against Mosquitto, one round each, keeps each run's JSON, joins them
# with the date, the commit and the machine into docs/bench/figures.json
# and regenerates the table in docs/performance.md from it. Takes about
# 15 minutes; run it on an otherwise idle machine, then commit both files.
#
#   scripts/perf-figures.sh            run the presets, then render
#   scripts/perf-figures.sh --render   render the committed JSON only
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -q -p chatd -p chat-bench
bin="$target/release"
figures=docs/bench/figures.json

if [ "${1:-}" != "--render" ]; then
  if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "perf-figures: the working tree has changes; figures must name the commit they measure" >&2
    exit 1
  fi
  command -v mosquitto >/dev/null || { echo "perf-figures: mosquitto missing (Debian: mosquitto)" >&2; exit 1; }
  runs=$(mktemp -d)
  trap 'rm -rf "$runs"' EXIT
  for preset in burst steady idle-scale ws; do
    extra=()
    [ "$preset" = burst ] && extra=(--compare chatd-raw)
    echo "perf-figures: $preset" >&2
    "$bin/chat-bench" --scenario "$preset" --compare mosquitto "${extra[@]}" --rounds 1 \
      2> >(grep -v "delivered (" >&2) | tail -n 1 > "$runs/$preset.json"
  done
  mkdir -p docs/bench
  "$bin/perf-report" collect "$runs" --date "$(date -u +%F)" \
    --commit "$(git rev-parse --short HEAD)" --out "$figures"
fi
"$bin/perf-report" render "$figures" --into docs/performance.md
echo "perf-figures: docs/performance.md now shows $figures" >&2
