#!/usr/bin/env bash
# Two `recstream` binaries' learners on the same work, through a fresh Tansu
# broker per run: CPU per rating of one learner over 100,000 ML-100K
# ratings (A and B in turn, ROUNDS times), then freshness with one learner
# each (worker, learner, Tansu, 1,000 req/s of background load).
# MODEL_PARTITIONS_A/B: partitions of model-updates for each binary (1 for
# the single writer from before learner groups, which refuses more).
#
#   bash bench/learner_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]
#   e.g. MODEL_PARTITIONS_A=1 bash bench/learner_ab.sh /tmp/old/recstream target/release/recstream 3
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
A=$1 B_BIN=$2 ROUNDS=${3:-3}
MPA=${MODEL_PARTITIONS_A:-4} MPB=${MODEL_PARTITIONS_B:-4}
MODEL=target/bench-model.rsm
[ -f $MODEL ] || { echo "train $MODEL first (bash bench/learners.sh does)" >&2; exit 1; }
if [ -f data/ml-100k/u.data ]; then RATINGS=data/ml-100k/u.data; else RATINGS=data/ml-100k/ml-100k.inter; fi
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

broker() { # $1 = model-updates partitions
  B=127.0.0.1:$(free_port)
  tansu broker --listener-url tcp://$B --advertised-listener-url tcp://$B --storage-engine memory://tansu/ >/dev/null 2>&1 &
  PIDS+=($!)
  sleep 1
  for t in quickstart-events recommendation-events recommendation-events-dlq rating-events rating-events-dlq item-deltas; do
    tansu topic create $t --broker tcp://$B --partitions 4 >/dev/null
  done
  tansu topic create model-updates --broker tcp://$B --partitions "$1" --config cleanup.policy=compact >/dev/null
  tansu topic create model-files --broker tcp://$B --partitions 1 >/dev/null
}

cpu_per_rating() { # $1 = binary, $2 = model-updates partitions
  broker "$2"
  local addr=127.0.0.1:$(free_port)
  rm -rf target/bench-ab-snapshots
  "$1" learn --brokers $B --model $MODEL --snapshot-dir target/bench-ab-snapshots --metrics-addr $addr \
    --kafka session.timeout.ms=6000 2>/dev/null &
  local learner=$!; PIDS+=($learner)
  sleep 10
  local t0; t0=$(awk '{print $14 + $15}' /proc/$learner/stat)
  target/release/recstream produce --brokers $B --ratings "$RATINGS" --topic rating-events 2>/dev/null
  local n=0
  for _ in $(seq 600); do
    n=$({ curl -s http://$addr/metrics || true; } | awk '$1 == "recstream_ratings_learnt_total" {print $2}')
    [ "${n:-0}" = 100000 ] && break; sleep 0.1
  done
  local t1; t1=$(awk '{print $14 + $15}' /proc/$learner/stat)
  python3 -c "print(f'$1: learnt ${n:-0}, {($t1 - $t0) / $(getconf CLK_TCK) / 100000 * 1e6:.1f} us of learner CPU per rating')"
  cleanup; PIDS=()
}

freshness() { # $1 = binary, $2 = model-updates partitions
  broker "$2"
  local fast=(--kafka session.timeout.ms=6000 --kafka linger.ms=0 --kafka fetch.wait.max.ms=1)
  "$1" serve --brokers $B --model $MODEL "${fast[@]}" 2>/dev/null &
  PIDS+=($!)
  rm -rf target/bench-ab-snapshots
  "$1" learn --brokers $B --model $MODEL --snapshot-dir target/bench-ab-snapshots "${fast[@]}" 2>/dev/null &
  PIDS+=($!)
  sleep 12
  target/release/recstream produce --brokers $B --uids 1..943 --rate 1000 --count 32000 2>/dev/null &
  PIDS+=($!)
  echo "$1:"
  echo "\$ target/release/recstream bench freshness --brokers $B --rate 1000 --duration 30"
  target/release/recstream bench freshness --brokers $B --rate 1000 --duration 30
  cleanup; PIDS=()
}

echo "== CPU per rating, one learner, 100,000 ratings (A then B, $ROUNDS rounds; quote the medians)"
for _ in $(seq "$ROUNDS"); do
  cpu_per_rating "$A" "$MPA"
  cpu_per_rating "$B_BIN" "$MPB"
done
echo; echo "== Freshness, one learner each"
freshness "$A" "$MPA"
freshness "$B_BIN" "$MPB"
