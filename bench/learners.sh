#!/usr/bin/env bash
# Learners in a group, through a Tansu broker process: ratings/s and CPU per
# rating of one and of two `recstream learn` processes on the same preloaded
# ratings (ML-100K, 100,000, keyed by user, 4 partitions), then freshness
# with two learners. Every command is printed before its output;
# BENCHMARKS.md quotes this.
#
#   bash bench/learners.sh [ROUNDS]   # about 8 minutes on 2 cores with 2 rounds
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
ROUNDS=${1:-2}
run() { echo; echo "\$ $*"; "$@"; }

cargo build --release --locked -q -p recstream
R=target/release/recstream
$R data fetch ml-100k --dir data >/dev/null
if [ -f data/ml-100k/u.data ]; then RATINGS=data/ml-100k/u.data ITEMS=data/ml-100k/u.item
else RATINGS=data/ml-100k/ml-100k.inter ITEMS=data/ml-100k/ml-100k.item; fi
MODEL=target/bench-model.rsm
$R train --ratings "$RATINGS" --items "$ITEMS" --out $MODEL --seed 1 --quiet
N=100000
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
metric() { { curl -s "http://$1/metrics" || true; } | awk -v m="$2" '$1 == m {print $2}'; }
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat))); done; echo $t; }
FAST=(--kafka session.timeout.ms=6000 --kafka heartbeat.interval.ms=1000)

# A fresh Tansu broker with the topics of the online loop, 4 partitions each.
broker() {
  PORT=$(free_port); B=127.0.0.1:$PORT
  tansu broker --listener-url tcp://$B --advertised-listener-url tcp://$B --storage-engine memory://tansu/ >target/bench-learners-tansu.log 2>&1 &
  TANSU=$!; PIDS+=($TANSU)
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
  for t in quickstart-events recommendation-events recommendation-events-dlq rating-events rating-events-dlq item-deltas; do
    tansu topic create $t --broker tcp://$B --partitions 4 >/dev/null
  done
  tansu topic create model-updates --broker tcp://$B --partitions 4 --config cleanup.policy=compact >/dev/null
  tansu topic create model-files --broker tcp://$B --partitions 1 >/dev/null
}

# Starts $1 learners on broker $B; sets LEARNERS (pids) and ADDRS (metrics).
learners() {
  LEARNERS=(); ADDRS=()
  for i in $(seq "$1"); do
    local addr=127.0.0.1:$(free_port)
    rm -rf target/bench-learner-snapshots-$i
    $R learn --brokers $B --model $MODEL --snapshot-dir target/bench-learner-snapshots-$i \
      --metrics-addr $addr "${FAST[@]}" 2>target/bench-learner-$i.log &
    LEARNERS+=($!); PIDS+=($!); ADDRS+=($addr)
  done
  # Until the group has settled: every learner owns a partition, four in all.
  for _ in $(seq 600); do
    local total=0 each=1
    for a in "${ADDRS[@]}"; do
      local n; n=$(metric "$a" recstream_learner_partitions); n=${n:-0}
      total=$((total + ${n%.*})); [ "${n%.*}" -ge 1 ] || each=0
    done
    [ $total -eq 4 ] && [ $each -eq 1 ] && return 0
    sleep 0.2
  done
  echo "the learners did not settle" >&2; return 1
}

learnt() { local t=0; for a in "${ADDRS[@]}"; do local n; n=$(metric "$a" recstream_ratings_learnt_total); n=${n:-0}; t=$((t + ${n%.*})); done; echo $t; }

echo "== Ratings/s and CPU per rating: $N ratings, 1 and 2 learner processes, fresh broker each"
echo "(the learners settle in their group first, then the ratings are written as fast as the broker takes them;"
echo " the clock runs from the first rating learnt to the last)"
for round in $(seq "$ROUNDS"); do
  for procs in 1 2; do
    broker
    learners $procs
    before=$(ticks "${LEARNERS[@]}")
    pstart=$(date +%s.%N)
    $R produce --brokers $B --ratings "$RATINGS" --topic rating-events 2>/dev/null &
    PRODUCER=$!
    for _ in $(seq 3000); do [ "$(learnt)" -gt 0 ] && break; sleep 0.02; done
    start=$(date +%s.%N)
    wait $PRODUCER; pend=$(date +%s.%N)
    for _ in $(seq 6000); do [ "$(learnt)" -ge $N ] && break; sleep 0.05; done
    end=$(date +%s.%N); after=$(ticks "${LEARNERS[@]}")
    got=$(learnt); hz=$(getconf CLK_TCK)
    python3 - "$procs" "$round" "$got" "$start" "$end" "$before" "$after" "$hz" "$pstart" "$pend" <<'EOF'
import sys
procs, rnd, got, start, end, before, after, hz, pstart, pend = sys.argv[1:]
got = int(got); secs = float(end) - float(start); cpu = (int(after) - int(before)) / int(hz)
print(f"round {rnd}, {procs} learner(s): {got} ratings learnt in {secs:.2f} s = {got / secs:,.0f} ratings/s "
      f"(producer done after {float(pend) - float(pstart):.2f} s); "
      f"learner CPU {cpu:.2f} s = {cpu / max(got, 1) * 1e6:.1f} us per rating")
EOF
    for p in "${LEARNERS[@]}" $TANSU; do kill -9 $p 2>/dev/null || true; done
    PIDS=()
  done
done

echo; echo "== Freshness with 2 learners through Tansu (worker and learners as their own processes)"
broker
FAST+=(--kafka linger.ms=0 --kafka fetch.wait.max.ms=1)
$R serve --brokers $B --model $MODEL "${FAST[@]}" 2>target/bench-learners-serve.log &
PIDS+=($!)
learners 2
$R produce --brokers $B --uids 1..943 --rate 1000 --count 32000 2>/dev/null &
PIDS+=($!)
run $R bench freshness --brokers $B --rate 1000 --duration 30
