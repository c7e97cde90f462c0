#!/usr/bin/env bash
# A real single-node Apache Cassandra 5.0.x for tests, without Docker:
# the jars come from Maven Central (cassandra-all + deps), run on JDK 17.
#   scripts/cassandra.sh start|stop|kill9|status|reset
# `reset` (only while stopped) empties the data directory: every test run
# creates keyspaces, and a data directory kept across runs grows until the
# small test heap runs out.
# Env: CASSANDRA_PORT (native CQL, 9042), CASSANDRA_STORAGE_PORT (7000),
#      CASSANDRA_HOME (~/.cache/chat-cassandra), CASSANDRA_HEAP (768m),
#      CASSANDRA_START_TIMEOUT (seconds, 180), CASSANDRA_JAVA (a JDK 17 java),
#      CASSANDRA_JIT (fast-start: C1 only, for tests; full: C2 too, for
#      benchmarks, where C1-only code costs throughput).
# Idempotent: `start` is a no-op when CQL already answers, and copes with a
# stale pid file left by kill -9.
set -euo pipefail

PORT="${CASSANDRA_PORT:-9042}"
STORAGE_PORT="${CASSANDRA_STORAGE_PORT:-7000}"
CHOME="${CASSANDRA_HOME:-$HOME/.cache/chat-cassandra}"
HEAP="${CASSANDRA_HEAP:-768m}"
TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
VERSIONS=(5.0.8 5.0.7 5.0.6 5.0.5 5.0.4 5.0.3 5.0.2)  # newest first
JAVA="${CASSANDRA_JAVA:-}"
PIDFILE="$CHOME/cassandra.pid"
LOG="$CHOME/logs/cassandra.out"

# Real CQL handshake, not just an open TCP port: send a protocol-v4 OPTIONS
# frame (version 0x04, flags 0, stream 0, opcode 0x05, body length 0) and
# expect a SUPPORTED reply header (version 0x84, stream 0, opcode 0x06).
cql_ping() {
  local hdr
  # shellcheck disable=SC2016  # $1 expands in the inner bash, on purpose
  hdr=$(timeout 5 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf "\x04\x00\x00\x00\x05\x00\x00\x00\x00" >&3
    head -c 5 <&3 | od -An -tx1 | tr -d " \n"' _ "$PORT" 2>/dev/null) || return 1
  [[ "$hdr" =~ ^84..000006$ ]]
}

# Is $1 a live Cassandra? Checks the command line, not just kill -0: after
# kill -9 or a reboot the pid file is stale and the pid may be reused, and a
# zombie (empty cmdline) counts as gone.
alive() { [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" == *CassandraDaemon* ]]; }
live_pid() {
  local pid; pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" && echo "$pid"
}

# Installs only what is missing (fresh machine). Cassandra 5.0 needs JDK 17
# exactly (4.x fails on 17, 24+ can't setSecurityManager), so pin its java
# rather than whatever `java` is on PATH (JAVA_HOME may point at another).
find_java17() {
  local j; for j in /usr/lib/jvm/java-17-openjdk-*/bin/java "$(command -v java || true)"; do
    [ -x "$j" ] && [[ "$("$j" -version 2>&1)" == *'version "17'* ]] && { echo "$j"; return 0; }
  done; return 0
}
ensure_tools() {
  local pkgs=()
  [ -n "$JAVA" ] || JAVA=$(find_java17)
  [ -n "$JAVA" ] || pkgs+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
  if [ ${#pkgs[@]} -gt 0 ]; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "cassandra.sh: installing ${pkgs[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${pkgs[@]}"
  fi
  [ -n "$JAVA" ] || JAVA=$(find_java17)
}

# Jars into $CHOME/lib, once: lib/.complete holds the version that resolved.
# Built in lib.tmp and renamed, so an interrupted download never looks done.
ensure_jars() {
  [ -s "$CHOME/lib/.complete" ] && return 0
  local v
  for v in "${VERSIONS[@]}"; do
    echo "cassandra.sh: fetching cassandra-all $v and its dependencies"
    cat >"$CHOME/pom.xml" <<EOF
<project><modelVersion>4.0.0</modelVersion><groupId>local.chat</groupId>
  <artifactId>cassandra-for-tests</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies><dependency><groupId>org.apache.cassandra</groupId>
    <artifactId>cassandra-all</artifactId><version>$v</version></dependency></dependencies>
</project>
EOF
    rm -rf "$CHOME/lib.tmp"
    if (cd "$CHOME" && mvn -B -q -Dstyle.color=never dependency:copy-dependencies \
          -DoutputDirectory=lib.tmp -DincludeScope=runtime) >"$CHOME/logs/mvn.out" 2>&1 \
       && ls "$CHOME"/lib.tmp/cassandra-all-*.jar >/dev/null 2>&1; then
      echo "$v" >"$CHOME/lib.tmp/.complete"
      rm -rf "${CHOME:?}/lib" && mv "$CHOME/lib.tmp" "$CHOME/lib" && return 0
    fi
    grep -m1 ERROR "$CHOME/logs/mvn.out" | cut -c1-300 >&2 || true  # e.g. not on Central
  done
  echo "cassandra.sh: no cassandra-all 5.0.x resolved" >&2; return 1
}

# Rewritten on every start so the port env vars take effect. 5.0 rejects
# unknown/old keys, so only current names. Tuned small for a 2-core box.
write_config() {
  local d="$CHOME/data"
  cat >"$CHOME/cassandra.yaml" <<EOF
cluster_name: chat-test
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
num_tokens: 1
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $STORAGE_PORT
native_transport_port: $PORT
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$STORAGE_PORT"
data_file_directories: [$d/data]
commitlog_directory: $d/commitlog
saved_caches_directory: $d/saved_caches
hints_directory: $d/hints
cdc_raw_directory: $d/cdc_raw
# An acked write must survive kill -9 of Cassandra itself. "periodic" (the
# default) replays only what the last sync covered: measured here, 11 of
# 50 acked rows were gone after a kill -9. "batch" syncs before acking,
# grouping concurrent writes into one fsync.
commitlog_sync: batch
commitlog_segment_size: 5MiB
auto_snapshot: false
memtable_allocation_type: heap_buffers
disk_access_mode: standard
# fewer threads and smaller pools: 2 cores, small heap, tiny test data
concurrent_compactors: 1
concurrent_reads: 4
concurrent_writes: 4
concurrent_counter_writes: 4
memtable_heap_space: 64MiB
memtable_flush_writers: 1
hinted_handoff_enabled: false
dynamic_snitch: false
# Paxos v2 (Cassandra 4.1+): LWT in 2 round trips instead of 4, about
# what ScyllaDB's LWT costs; v1 made every send 5x slower here.
paxos_variant: v2
EOF
  # Cassandra's jar has no logback config; without one logback logs DEBUG.
  cat >"$CHOME/logback.xml" <<'EOF'
<configuration><appender name="OUT" class="ch.qos.logback.core.ConsoleAppender"><encoder>
  <pattern>%-5level [%thread] %date{ISO8601} %logger{0}: %msg%n</pattern></encoder></appender>
  <root level="INFO"><appender-ref ref="OUT"/></root></configuration>
EOF
}

launch() {
  local lib="$CHOME/lib" flags=() m jamm=("$CHOME"/lib/jamm-*.jar)
  # From conf/jvm17-server.options: JDK 17 module access Cassandra needs.
  for m in java.base/jdk.internal.misc java.management.rmi/com.sun.jmx.remote.internal.rmi \
           java.rmi/sun.rmi.registry java.rmi/sun.rmi.server java.sql/java.sql \
           java.base/java.lang.ref jdk.unsupported/sun.misc \
           java.management/com.sun.jmx.remote.security; do
    flags+=(--add-exports "$m=ALL-UNNAMED"); done
  for m in java.lang.module jdk.internal.loader jdk.internal.ref jdk.internal.reflect \
           jdk.internal.math jdk.internal.module jdk.internal.util.jar sun.nio.ch \
           java.io java.lang.reflect java.lang java.util java.nio; do
    flags+=(--add-opens "java.base/$m=ALL-UNNAMED"); done
  flags+=(--add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED)
  mkdir -p "$CHOME/data"
  [ -f "$LOG" ] && mv -f "$LOG" "$LOG.1"   # keep one previous run's log
  cd "$CHOME"
  # Cassandra always calls mlockall(MCL_CURRENT); as root (CAP_IPC_LOCK) that
  # pins the whole heap: idle RSS ~900 MB instead of ~400 MB. Without that
  # one capability it fails harmlessly ("Unable to lock JVM memory" warning).
  local nolock=()
  [ "$(id -u)" -eq 0 ] && command -v setpriv >/dev/null && nolock=(setpriv --bounding-set -ipc_lock)
  # nohup+setsid: detached from our session and terminal, so the caller's
  # Ctrl-C or process-group kill doesn't take it down. fd 9 (our lock) closed.
  # MALLOC_ARENA_MAX=4 as cassandra-env.sh does (less RSS). C1 only
  # (TieredStopAtLevel=1): 2-4 s faster start, ~40% less CPU on 2 cores.
  # ring_delay/gossip: no waits. (Not -Dcassandra.unsafesystem: it keeps schema
  # changes out of the commit log, and a kill -9 then loses whole keyspaces.)
  local jit=(-XX:TieredStopAtLevel=1)
  [ "${CASSANDRA_JIT:-fast-start}" = full ] && jit=()
  MALLOC_ARENA_MAX=4 nohup setsid "${nolock[@]}" "$JAVA" -Xms"$HEAP" -Xmx"$HEAP" -Xss256k -XX:+UseG1GC \
    "${jit[@]}" -XX:+PerfDisableSharedMem -XX:+ExitOnOutOfMemoryError \
    -Djava.net.preferIPv4Stack=true -Djdk.attach.allowAttachSelf=true \
    -Dio.netty.tryReflectionSetAccessible=true "${flags[@]}" -javaagent:"${jamm[0]}" \
    -Dcassandra-foreground=yes -Dcassandra.config="file://$CHOME/cassandra.yaml" \
    -Dlogback.configurationFile="$CHOME/logback.xml" \
    -Dcassandra.logdir="$CHOME/logs" -Dcassandra.storagedir="$CHOME/data" \
    -Dcassandra.skip_wait_for_gossip_to_settle=0 -Dcassandra.ring_delay_ms=1 \
    -Dcassandra.initial_token=0 -Dcassandra.load_ring_state=false \
    -cp "$lib/*" org.apache.cassandra.service.CassandraDaemon \
    >"$LOG" 2>&1 </dev/null 9>&- &
  echo $! >"$PIDFILE"
}

start() {
  if cql_ping; then echo "cassandra: CQL already answers on 127.0.0.1:$PORT"; return 0; fi
  mkdir -p "$CHOME/logs"
  exec 9>"$CHOME/.lock"; flock 9   # two concurrent starts launch only one JVM
  local pid t0=$SECONDS
  if pid=$(live_pid); then
    echo "cassandra: pid $pid already starting, waiting for it"
  else
    rm -f "$PIDFILE"   # stale (kill -9, reboot) or absent
    ensure_tools; ensure_jars; write_config; launch
    pid=$(cat "$PIDFILE")
    echo "cassandra: launched $(cat "$CHOME/lib/.complete") as pid $pid, log $LOG"
  fi
  while (( SECONDS - t0 < TIMEOUT )); do
    if cql_ping; then echo "cassandra: CQL ready on 127.0.0.1:$PORT after $((SECONDS - t0))s"; return 0; fi
    alive "$pid" || { echo "cassandra: process $pid exited" >&2; break; }
    sleep 0.5
  done
  echo "cassandra: not ready after $((SECONDS - t0))s; last 50 lines of $LOG:" >&2
  tail -n 50 "$LOG" >&2 || true; return 1
}

stop() {
  local pid _
  if ! pid=$(live_pid); then rm -f "$PIDFILE"; echo "cassandra: not running"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 150); do alive "$pid" || break; sleep 0.2; done  # drain hook: 30 s
  if alive "$pid"; then
    echo "cassandra: pid $pid ignored TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
  fi
  rm -f "$PIDFILE"; echo "cassandra: stopped pid $pid"
}

# A crash, for durability tests: no flush, no drain. The data dir stays;
# the next start replays the commit log.
kill9() {
  local pid _
  if ! pid=$(live_pid); then echo "cassandra: not running"; return 0; fi
  kill -KILL "$pid" 2>/dev/null || true
  for _ in $(seq 50); do alive "$pid" || break; sleep 0.2; done
  rm -f "$PIDFILE"; echo "cassandra: killed pid $pid (SIGKILL)"
}

reset() {
  if cql_ping || live_pid >/dev/null; then
    echo "cassandra: running; stop it before a reset" >&2
    exit 1
  fi
  rm -rf "${CHOME:?}/data"
  echo "cassandra: data directory emptied"
}

case "${1:-}" in
  start|stop|kill9|reset) "$1" ;;
  status) if cql_ping; then echo "cassandra: up on 127.0.0.1:$PORT"; else echo "cassandra: down"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|kill9|status|reset" >&2; exit 2 ;;
esac
