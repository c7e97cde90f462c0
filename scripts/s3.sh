#!/usr/bin/env bash
# Local S3-compatible server for tests: S3Proxy (org.gaul:s3proxy from Maven Central)
# with the jclouds "filesystem" backend and real AWS SigV2/SigV4 verification.
#
#   s3.sh install          fetch the jar into ~/.cache/chat-s3 (idempotent)
#   s3.sh start            install if needed, start in background, wait until it answers
#   s3.sh stop             stop it (pid file)
#   s3.sh status           exit 0 if up and answering, non-zero otherwise
#
# Env: S3_PORT (9400)  S3_DATA_DIR (~/.cache/chat-s3/data-$S3_PORT)
#      S3_ACCESS_KEY (chat-test)  S3_SECRET_KEY (chat-test-secret)
#      S3_BUCKETS ("" ; space-separated buckets to pre-create)
#      CHAT_S3_HOME (~/.cache/chat-s3)  S3_START_TIMEOUT (60 s)
# Endpoint: http://127.0.0.1:$S3_PORT  (path-style; any region name is accepted)
set -euo pipefail

S3PROXY_VERSION=4.1.0
HOME_DIR=${CHAT_S3_HOME:-$HOME/.cache/chat-s3}
PORT=${S3_PORT:-9400}
DATA_DIR=${S3_DATA_DIR:-$HOME_DIR/data-$PORT}
ACCESS_KEY=${S3_ACCESS_KEY:-chat-test}
SECRET_KEY=${S3_SECRET_KEY:-chat-test-secret}
JAR=$HOME_DIR/s3proxy-$S3PROXY_VERSION-jar-with-dependencies.jar
RUN_DIR=$HOME_DIR/run-$PORT
PID_FILE=$RUN_DIR/s3proxy.pid
CONF=$RUN_DIR/s3proxy.conf
LOG=$RUN_DIR/s3proxy.log

log() { echo "s3.sh: $*" >&2; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

need_java() {
  if command -v java >/dev/null 2>&1 &&
     java -version 2>&1 | grep -Eq 'version "(1[7-9]|[2-9][0-9])'; then return; fi
  log "installing a Java 17 runtime via apt"
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null
}

install() {
  need_java
  [ -s "$JAR" ] && return 0
  mkdir -p "$HOME_DIR"
  if ! command -v mvn >/dev/null 2>&1; then
    log "installing maven via apt"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq maven >/dev/null
  fi
  log "fetching org.gaul:s3proxy:$S3PROXY_VERSION (jar-with-dependencies, ~55 MB)"
  # -C = fail on checksum mismatch; artifact lands in ~/.m2 too, then is copied here.
  mvn -q -B -C org.apache.maven.plugins:maven-dependency-plugin:3.6.1:copy \
    -Dartifact="org.gaul:s3proxy:$S3PROXY_VERSION:jar:jar-with-dependencies" \
    -DoutputDirectory="$HOME_DIR.tmp.$$" >&2
  mv "$HOME_DIR.tmp.$$/$(basename "$JAR")" "$JAR.part" && rm -rf "$HOME_DIR.tmp.$$"
  mv "$JAR.part" "$JAR"
}

answers() {  # any HTTP reply (403 for anonymous) means the server is up
  local code
  code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/" 2>/dev/null) || true
  [ -n "$code" ] && [ "$code" != 000 ]
}

running_pid() {
  [ -f "$PID_FILE" ] || return 1
  local pid; pid=$(cat "$PID_FILE")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

start() {
  if running_pid >/dev/null && answers; then log "already running on :$PORT"; return 0; fi
  if answers; then log "port $PORT is already used by something else"; return 1; fi
  install
  mkdir -p "$RUN_DIR" "$DATA_DIR"
  for b in ${S3_BUCKETS:-}; do mkdir -p "$DATA_DIR/$b"; done  # a directory == a bucket
  cat > "$CONF" <<EOF
s3proxy.endpoint=http://127.0.0.1:$PORT
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=$ACCESS_KEY
s3proxy.credential=$SECRET_KEY
jclouds.provider=filesystem
jclouds.filesystem.basedir=$DATA_DIR
EOF
  # NopStatusListener silences logback's own start-up chatter; C1-only JIT starts faster.
  LOG_LEVEL=${S3_LOG_LEVEL:-info} nohup java -Xmx512m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC \
    -Dlogback.statusListenerClass=ch.qos.logback.core.status.NopStatusListener \
    -jar "$JAR" --properties "$CONF" >"$LOG" 2>&1 </dev/null &
  echo $! > "$PID_FILE"
  local deadline=$(( $(date +%s) + ${S3_START_TIMEOUT:-60} ))
  until answers; do
    if ! running_pid >/dev/null; then log "s3proxy exited; log:"; tail -n 30 "$LOG" >&2; rm -f "$PID_FILE"; return 1; fi
    if [ "$(date +%s)" -ge "$deadline" ]; then log "timed out; log:"; tail -n 30 "$LOG" >&2; stop; return 1; fi
    sleep 0.2
  done
  log "up: http://127.0.0.1:$PORT  data=$DATA_DIR  pid=$(cat "$PID_FILE")"
}

stop() {
  local pid
  if pid=$(running_pid); then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    log "stopped pid $pid"
  else
    log "not running"
  fi
  rm -f "$PID_FILE"
}

status() {
  if running_pid >/dev/null && answers; then echo "up: http://127.0.0.1:$PORT pid=$(cat "$PID_FILE")"; return 0; fi
  echo "down (port $PORT)"; return 1
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: $0 {install|start|stop|status|restart}" >&2; exit 2 ;;
esac
