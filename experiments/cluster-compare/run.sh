#!/usr/bin/env bash
# Usage: ./run.sh <a|b|local> <label> <count> <interval_us> [kill: none|KILL|STOP] [kill_after_s] [timeline_ms]
# Env: KILL_TARGET=node3|nats, PUBLISH_MODE=seq|spawn, GRPC_TIMEOUT=60s (mode a), PROBE_GRACE_S=15
# Starts 3 nodes (and nats-server for b) on loopback, subscribes on node 2,
# publishes from node 1, optionally sends <kill> to node 3 after kill_after_s,
# prints the probe's report, stops everything it started.
set -u
cd "$(dirname "$0")"
MODE=$1; LABEL=$2; COUNT=$3; INTERVAL=$4; KILL=${5:-none}; AFTER=${6:-5}; TL=${7:-0}
B=target/release; mkdir -p logs
PEERS=1@127.0.0.1:5363,2@127.0.0.1:5364,3@127.0.0.1:5365
NATS_PORT=14222
pids=()
if [ "$MODE" = b ]; then
  nats-server -a 127.0.0.1 -p $NATS_PORT > logs/$LABEL.nats.log 2>&1 & NATS_PID=$!; pids+=($NATS_PID); sleep 0.5
fi
N=3; [ "$MODE" = local ] && N=1
for i in $(seq 1 $N); do
  case $MODE in
    a) exec $B/node a $i 2188$i 2900$i 536$((2+i)) $PEERS ;;
    b) exec $B/node b $i 2188$i 2900$i nats://127.0.0.1:$NATS_PORT ;;
    local) exec $B/node local $i 2188$i 2900$i ;;
  esac > logs/$LABEL.node$i.log 2>&1 &
  pids+=($!); eval NODE$i=$!
done
sleep 2
SUB=21882; [ "$MODE" = local ] && SUB=21881
$B/probe $SUB 29001 $COUNT $INTERVAL thread/x $TL > logs/$LABEL.out 2>&1 & PROBE=$!
if [ "$KILL" != none ]; then
  # KILL_TARGET=nats (mode b) kills the NATS server instead of node 3.
  VICTIM=$NODE3; [ "${KILL_TARGET:-node3}" = nats ] && VICTIM=$NATS_PID
  sleep "$AFTER"; kill -$KILL $VICTIM; echo "sent SIG$KILL to ${KILL_TARGET:-node3} at +${AFTER}s" >> logs/$LABEL.out
fi
wait $PROBE
[ "$KILL" = STOP ] && kill -CONT $VICTIM
for p in "${pids[@]}"; do kill $p 2>/dev/null; done
sleep 0.5
for p in "${pids[@]}"; do kill -9 $p 2>/dev/null; done
wait 2>/dev/null
echo "== $LABEL ($MODE, ${PUBLISH_MODE:-seq}, kill=$KILL)"; cat logs/$LABEL.out
