#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what the tests need first;
# safe to run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: stock MQTT clients from another project,
# a plain Mosquitto broker the benchmark compares against, a real SMTP
# server (aiosmtpd) for the e-mail fallback, and NATS (JetStream).
missing=()
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
[ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
/usr/bin/python3 -c 'import aiosmtpd' >/dev/null 2>&1 || missing+=(python3-aiosmtpd)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
# valgrind's callgrind counts the instructions of a send (scripts/cost-guard.sh).
command -v valgrind >/dev/null 2>&1 || missing+=(valgrind)
# Node.js for the web SDK's tests (Debian's, if the machine has none).
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
# Debian's Chromium for the browser tests (playwright-core drives it; no
# browser is ever downloaded), with fonts for Vietnamese and emoji.
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -e /usr/share/fonts/truetype/noto/NotoSans-Regular.ttf ] || missing+=(fonts-noto-core)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}"
fi

# A real CQL server (Apache Cassandra 5.0 from Maven Central on JDK 17) for
# the ScyllaDB store's tests: started once for the run (the tests would
# start it themselves, one at a time), stopped at the end if we started it.
cleanup=()
if ! scripts/cassandra.sh status >/dev/null 2>&1; then
  cleanup+=("scripts/cassandra.sh stop")
  # Started by us: from an empty data directory (test keyspaces pile up).
  scripts/cassandra.sh reset
fi
# A real S3-compatible server (S3Proxy from Maven Central, SigV4 checked)
# for the attachment tests, on 127.0.0.1:9400.
if ! scripts/s3.sh status >/dev/null 2>&1; then
  cleanup+=("scripts/s3.sh stop")
fi
trap 'for c in "${cleanup[@]}"; do $c || true; done' EXIT
scripts/cassandra.sh start
S3_BUCKETS="chat-test" scripts/s3.sh start

# Python tools from PyPI the tests drive (OpenAPI validator, schemathesis),
# pinned, in a virtualenv of their own.
scripts/python-tools.sh

# The web packages' dependencies, from the lock file (the Rust end-to-end
# tests also run the SDK and the browser tests against the real server),
# and the check that the committed demo bundle (web/dist, which chatd
# embeds) is what the sources build.
npm ci --prefix web --no-audit --no-fund
npm run --prefix web/demo test

# The client protocol's machine-readable form (docs/asyncapi.yaml) parses
# with the official AsyncAPI parser, and the code's own encodings
# (web/sdk/test/fixtures/v2.json, kept current by cargo test) fit it.
scripts/asyncapi-check.sh

# A cold build of the workspace and its tests needs about 2 GB of disk
# (a CI run once died of a full disk mid-link). Incremental compilation only
# pays off across edits, so a run from here skips its caches (~1.4 GB).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
target_dir="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target_dir"
free_kb=$(df -Pk "$target_dir" | awk 'NR==2 {print $4}')
if [ "$free_kb" -lt $((3 * 1024 * 1024)) ]; then
  echo "warning: only $((free_kb / 1024)) MB free for $target_dir; a cold build needs ~2 GB" >&2
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked

# The cost of a send in instructions (not seconds) against the committed
# baseline: a regression of the message path fails here, not in a bench.
scripts/cost-guard.sh

# The web packages: type checks and unit tests (Vitest); their live and
# browser tests ran above, inside the end-to-end suite.
npm test --prefix web

echo "target size: $(du -sh "$target_dir" | cut -f1); free: $(df -Ph "$target_dir" | awk 'NR==2 {print $4}')"
