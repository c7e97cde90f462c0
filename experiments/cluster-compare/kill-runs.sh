#!/usr/bin/env bash
# The node-death runs reported in README.md: 3000 publishes every 5 ms (15 s),
# node 3 (no subscribers) killed or frozen 5 s in; 500 ms timeline buckets.
cd "$(dirname "$0")"
export PROBE_GRACE_S=${PROBE_GRACE_S:-75}
PUBLISH_MODE=seq                    ./run.sh a a-kill-seq-60s   3000 5000 KILL 5 500
PUBLISH_MODE=spawn                  ./run.sh a a-kill-spawn-60s 3000 5000 KILL 5 500
PUBLISH_MODE=seq   GRPC_TIMEOUT=2s  ./run.sh a a-kill-seq-2s    3000 5000 KILL 5 500
PUBLISH_MODE=spawn GRPC_TIMEOUT=2s  ./run.sh a a-kill-spawn-2s  3000 5000 KILL 5 500
PUBLISH_MODE=seq   GRPC_TIMEOUT=5s  ./run.sh a a-stop-seq-5s    3000 5000 STOP 5 500
PUBLISH_MODE=seq                    ./run.sh b b-kill-seq       3000 5000 KILL 5 500
PUBLISH_MODE=seq                    ./run.sh b b-stop-seq       3000 5000 STOP 5 500
PUBLISH_MODE=seq KILL_TARGET=nats PROBE_GRACE_S=15 ./run.sh b b-natsdown-seq 3000 5000 KILL 5 500
