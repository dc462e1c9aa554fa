#!/usr/bin/env bash
# Memory per user: a learner and a worker (separate processes, on a Tansu
# broker process so that the broker's memory is not counted) take in
# ratings from users the model has never seen, in two steps of STEP new
# users, and the resident memory (VmRSS) of each is read before and after
# each step, once the worker has applied every update. README quotes the
# result ("Memory").
#
#   bash bench/memory.sh            # 2 x 25,000 new users, about 2 minutes
#   STEP=50000 bash bench/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
STEP=${STEP:-25000}
cargo build --release --locked -q -p recstream
R=target/release/recstream
work=target/memory
rm -rf "$work"; mkdir -p "$work"
$R data fetch ml-100k --dir data >/dev/null
if [ -f data/ml-100k/u.data ]; then RATINGS=data/ml-100k/u.data; else RATINGS=data/ml-100k/ml-100k.inter; fi
MODEL=$work/model.rsm
$R train --ratings "$RATINGS" --out $MODEL --seed 1 --quiet

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
B=127.0.0.1:$(free_port)
tansu broker --listener-url tcp://$B --advertised-listener-url tcp://$B --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
TANSU=$!
PIDS=($TANSU)
trap 'for p in "${PIDS[@]}"; do kill -9 $p 2>/dev/null || true; done' EXIT
sleep 1
LM=127.0.0.1:$(free_port); WM=127.0.0.1:$(free_port)
GROUP="--kafka session.timeout.ms=6000"
$R learn --brokers $B --model $MODEL --create-topics --partitions 1 --snapshot-dir $work/snapshots \
  --metrics-addr $LM $GROUP 2>"$work/learn.log" &
LEARN=$!; PIDS+=($LEARN)
$R serve --brokers $B --model $MODEL --create-topics --partitions 1 --metrics-addr $WM \
  --kafka fetch.wait.max.ms=5 $GROUP 2>"$work/serve.log" &
SERVE=$!; PIDS+=($SERVE)
ready() { for _ in $(seq 600); do curl -sf "http://$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "not ready: $1"; exit 1; }
metric() { curl -s "http://$1/metrics" | awk -v m="$2" '$1 == m {print $2}'; }
rss() { awk '/VmRSS/ {print $2}' /proc/"$1"/status; }
ready $LM; ready $WM
sleep 2

echo "== memory per new user: recstream learn and recstream serve on Tansu ($B), ML-100K model (943 users), steps of $STEP new users"
echo "users_added  learner_rss_kb  worker_rss_kb"
echo "0  $(rss $LEARN)  $(rss $SERVE)"
l0=$(rss $LEARN); w0=$(rss $SERVE)
for step in 1 2; do
  # One rating each from STEP users the model has never seen (u.data format).
  python3 - "$step" "$STEP" >"$work/new-$step.tsv" <<'EOF'
import random, sys
step, n = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(step)
for i in range(n):
    uid = 1_000_000 + (step - 1) * n + i
    print(f"{uid}\t{rng.randint(1, 1682)}\t{rng.randint(1, 5)}\t{880000000 + i}")
EOF
  $R produce --brokers $B --topic rating-events --ratings "$work/new-$step.tsv" >/dev/null
  want=$((step * STEP))
  for _ in $(seq 1200); do
    # The worker's model sequence is the learner's: one per rating learnt.
    learnt=$(metric $LM recstream_ratings_learnt_total); applied=$(metric $WM recstream_model_update_sequence)
    [ "${learnt%.*}" -ge "$want" ] 2>/dev/null && [ "${applied%.*}" -ge "$want" ] 2>/dev/null && break
    sleep 0.5
  done
  sleep 2
  echo "$want  $(rss $LEARN)  $(rss $SERVE)   (learnt ${learnt:-?}, worker at sequence ${applied:-?})"
done
l1=$(rss $LEARN); w1=$(rss $SERVE)
n=$((2 * STEP))
echo "learner: $(( (l1 - l0) * 1024 / n )) bytes per new user; worker: $(( (w1 - w0) * 1024 / n )) bytes per new user"
