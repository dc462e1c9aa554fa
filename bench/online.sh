#!/usr/bin/env bash
# Online-learning and exactly-once benchmarks. Every command is printed
# before its output; BENCHMARKS.md quotes this.
#
#   bash bench/online.sh     # about 6 minutes on 2 cores
#
# The raw results (the prequential replay per window, freshness CDF tables)
# are written to bench/results/online/ for bench/plot.py. FRESH_SECONDS
# shortens the freshness runs; EOS=0 leaves out the exactly-once rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
FRESH_SECONDS=${FRESH_SECONDS:-30}
EOS=${EOS:-1}
run() { echo; echo "\$ $*"; "$@"; }
. bench/results.sh
results_init bench/results/online "FRESH_SECONDS=$FRESH_SECONDS EOS=$EOS bash bench/online.sh"

cargo build --release --locked -q -p recstream
R=target/release/recstream
$R data fetch ml-100k --dir data >/dev/null
if [ -f data/ml-100k/u.data ]; then RATINGS=data/ml-100k/u.data ITEMS=data/ml-100k/u.item
else RATINGS=data/ml-100k/ml-100k.inter ITEMS=data/ml-100k/ml-100k.item; fi
MODEL=target/bench-model.rsm
$R train --ratings "$RATINGS" --items "$ITEMS" --out $MODEL --seed 1 --quiet
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
wait_for() { for _ in $(seq 300); do grep -q "$2" "$1" && return 0; sleep 0.1; done; echo "timed out waiting for '$2' in $1" >&2; return 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

echo "== Prequential: train on the first half of ML-100K's timeline, replay the second half"
run $R eval --prequential --ratings "$RATINGS" --seed 1
run $R eval --prequential --ratings "$RATINGS" --seed 1 --freeze-items
# The same replay as JSON, with both contenders per slice of the timeline.
$R eval --prequential --ratings "$RATINGS" --seed 1 --json >"$RESULTS/prequential.json"

# One freshness run on a fresh embedded broker: $1 = background requests/s
# (0 for none), $2 = the result's name.
fresh_embedded() {
  # A data folder of its own: `run` resumes from the snapshot an earlier run
  # left there, whose rating offsets a fresh broker does not have (the
  # worker then takes the new updates for ones it has, and nothing is fresh).
  rm -rf target/bench-fresh-data
  $R run --model $MODEL --data-dir target/bench-fresh-data --metrics-addr 127.0.0.1:0 >target/bench-fresh.out 2>target/bench-fresh.log &
  local run_pid=$!
  PIDS+=($run_pid)
  wait_for target/bench-fresh.log "partitions assigned"
  wait_for target/bench-fresh.log " learning "
  MB=$(grep -m1 '^  broker' target/bench-fresh.out | awk '{print $2}')
  if [ "$1" -gt 0 ]; then
    $R produce --brokers $MB --uids 1..943 --rate "$1" --count $(( $1 * (FRESH_SECONDS + 2) )) 2>/dev/null &
    PIDS+=($!)
  fi
  # CPU of the embedded broker's thread (librdkafka's mock cluster) near the end of the run.
  ( sleep $(( FRESH_SECONDS * 5 / 6 )); top -H -b -n1 -d 1 -p $run_pid | awk '/rdk:mock/ {print "embedded broker thread CPU near the end: " $9 "%"}' ) &
  run $R bench freshness --brokers $MB --rate 1000 --duration $FRESH_SECONDS | tee target/bench-fresh.json
  keep target/bench-fresh.json "$2"
  METRICS=$(grep -m1 'metrics' target/bench-fresh.out | awk '{print $2}')
  echo "worker histogram (rating timestamp to first reply reflecting it), from $METRICS:"
  curl -s "$METRICS" | grep -E '^recstream_freshness_seconds_(bucket|count)'
  for p in "${PIDS[@]}"; do [ "$p" = "$run_pid" ] || kill "$p" 2>/dev/null || true; done
  kill -TERM $run_pid; wait $run_pid || true
  PIDS=()
}

echo; echo "== Freshness: 1,000 ratings/s, no other requests, embedded broker (worker, learner, broker in one process)"
fresh_embedded 0 freshness-embedded-ratings-only.json
echo; echo "== Freshness: 1,000 ratings/s plus 1,000 requests/s for $FRESH_SECONDS s, embedded broker; three runs, each on a fresh broker"
for i in 1 2 3; do echo "-- run $i"; fresh_embedded 1000 freshness-embedded-with-requests-$i.json; done

echo; echo "== Freshness through Tansu (separate broker process; worker and learner as their own processes)"
PORT=$(free_port); B=127.0.0.1:$PORT
tansu broker --listener-url tcp://$B --advertised-listener-url tcp://$B --storage-engine memory://tansu/ >target/bench-tansu-fresh.log 2>&1 &
PIDS+=($!)
sleep 1
for t in quickstart-events recommendation-events recommendation-events-dlq rating-events rating-events-dlq item-deltas; do tansu topic create $t --broker tcp://$B --partitions 4 >/dev/null; done
tansu topic create model-updates --broker tcp://$B --partitions 4 --config cleanup.policy=compact >/dev/null
tansu topic create model-files --broker tcp://$B --partitions 1 >/dev/null
FAST=(--kafka session.timeout.ms=6000 --kafka linger.ms=0 --kafka fetch.wait.max.ms=1)
$R serve --brokers $B --model $MODEL "${FAST[@]}" 2>target/bench-fresh-serve.log &
PIDS+=($!)
$R learn --brokers $B --model $MODEL --snapshot-dir target/bench-snapshots "${FAST[@]}" 2>target/bench-fresh-learn.log &
PIDS+=($!)
wait_for target/bench-fresh-serve.log "partitions assigned"
wait_for target/bench-fresh-learn.log " learning "
$R produce --brokers $B --uids 1..943 --rate 1000 --count $(( 1000 * (FRESH_SECONDS + 2) )) 2>/dev/null &
PIDS+=($!)
run $R bench freshness --brokers $B --rate 1000 --duration $FRESH_SECONDS | tee target/bench-fresh.json
keep target/bench-fresh.json freshness-tansu.json
for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
PIDS=()

[ "$EOS" = 1 ] || exit 0
echo; echo "== Exactly-once cost: 100,000 preloaded requests, at-least-once then exactly-once, embedded broker"
echo "(the embedded broker accepts transactions but does not make them durable, so this is the client-side cost)"
$R run --model $MODEL --no-learn --no-follow >target/bench-eos.out 2>target/bench-eos.log &
PIDS+=($!)
wait_for target/bench-eos.log "partitions assigned"
MB=$(grep -m1 '^  broker' target/bench-eos.out | awk '{print $2}')
run $R produce --brokers $MB --topic eos-in --create-topics --uids 1..943 --count 100000
for round in 1 2; do
  for mode in at-least-once exactly-once; do
    flag=(); [ $mode = exactly-once ] && flag=(--exactly-once --transactional-id bench-eos-$round)
    $R serve --brokers $MB --model $MODEL --no-follow --create-topics --input-topic eos-in --output-topic out-$mode-$round \
      --group-id bench-$mode-$round "${flag[@]}" 2>target/bench-$mode.log &
    SERVE=$!
    echo "-- $mode, round $round"
    run $R bench replies --brokers $MB --topic out-$mode-$round --expect 100000 --idle-timeout 30
    kill -TERM $SERVE; wait $SERVE || true
  done
done
