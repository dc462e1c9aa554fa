#!/usr/bin/env bash
# Streaming benchmarks through a separate broker process (Tansu), side by
# side with the two Python peers in the same run, plus latency on Tansu and
# on the embedded broker, each next to the broker's own round trip.
# Every command is printed before its output; BENCHMARKS.md quotes this.
#
#   bash bench/stream.sh     # about 7 minutes on 2 cores
#
# The raw results (throughput and CPU per round, latency CDF tables) are
# written to bench/results/stream/ for bench/plot.py; N, ROUNDS and
# LAT_SECONDS shorten a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
N=${N:-200000}     # requests for recstream
NV=${NV:-30000}    # requests for the vectorized Python peer
NN=${NN:-1000}     # requests for the notebook-style Python peer
ROUNDS=${ROUNDS:-3} # throughput rounds
LAT_SECONDS=${LAT_SECONDS:-30} # length of each latency run
run() { echo; echo "\$ $*"; "$@"; }
. bench/results.sh
results_init bench/results/stream "N=$N NV=$NV NN=$NN ROUNDS=$ROUNDS LAT_SECONDS=$LAT_SECONDS bash bench/stream.sh"

cargo build --release --locked -q -p recstream
R=target/release/recstream
$R data fetch ml-100k --dir data >/dev/null
if [ -f data/ml-100k/u.data ]; then RATINGS=data/ml-100k/u.data ITEMS=data/ml-100k/u.item
else RATINGS=data/ml-100k/ml-100k.inter ITEMS=data/ml-100k/ml-100k.item; fi
bash bench/python/setup.sh
PY=${RECSTREAM_PY_VENV:-bench/python/.venv}/bin/python
MODEL=target/bench-model.rsm
$R train --ratings "$RATINGS" --items "$ITEMS" --out $MODEL --seed 1 --quiet

PORT=$($PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
B=127.0.0.1:$PORT
tansu broker --listener-url tcp://$B --advertised-listener-url tcp://$B --storage-engine memory://tansu/ >target/bench-tansu.log 2>&1 &
TANSU=$!
PIDS=()
cleanup() { for p in "${PIDS[@]}" $TANSU; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
sleep 1
topic() { tansu topic create "$1" --broker tcp://$B --partitions 4 >/dev/null; }
for t in bench-requests dead-letters; do topic $t; done
# Every serve follows the model topics by default and checks them at start.
tansu topic create model-updates --broker tcp://$B --partitions 1 --config cleanup.policy=compact >/dev/null
tansu topic create model-files --broker tcp://$B --partitions 1 >/dev/null
# CPU (user+sys, clock ticks) of a process so far, from /proc.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
now_ns() { date +%s%N; }
# "<broker CPU share of one core>" since (ticks, ns) taken by broker_mark.
broker_mark() { BT0=$(cpu_ticks $TANSU); BW0=$(now_ns); }
broker_share() { python3 -c "print(f'{($(cpu_ticks $TANSU) - $BT0) / $HZ / (($(now_ns) - $BW0) / 1e9):.2f}')"; }
CPUS=target/bench-cpu.txt; : >$CPUS
wait_assigned() { for _ in $(seq 300); do grep -q "partitions assigned" "$1" && return 0; sleep 0.1; done; return 1; }

echo "== Broker: tansu $(tansu --version | cut -d' ' -f2) at $B (memory storage), 4 partitions; CPU:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
run $R produce --brokers $B --topic bench-requests --uids 1..943 --count $N

echo; echo "== Throughput: $N preloaded requests, rate from the replies' timestamps; $ROUNDS rounds, peers alternating"
RATES=target/bench-rates.txt; : >$RATES
for round in $(seq $ROUNDS); do
  for t in out-recstream-$round out-vectorized-$round out-notebook-$round; do topic $t; done
  echo; echo "-- round $round"
  broker_mark
  $R serve --brokers $B --model $MODEL --input-topic bench-requests --output-topic out-recstream-$round \
    --dlq-topic dead-letters --group-id bench-recstream-$round --kafka session.timeout.ms=6000 2>target/bench-serve.log &
  SERVE=$!; PIDS+=($SERVE)
  run $R bench replies --brokers $B --topic out-recstream-$round --expect $N | tee -a target/bench-replies.json
  echo "recstream $(tail -1 target/bench-replies.json)" >>$RATES
  # Whole process, start-up included, over every reply.
  CPU_US=$(python3 -c "print(f'{$(cpu_ticks $SERVE) / $HZ * 1e6 / $N:.1f}')")
  echo "recstream $CPU_US $(broker_share)" >>$CPUS
  echo "recstream serve peak RSS: $(grep VmHWM /proc/$SERVE/status | awk '{print $2, $3}'), CPU $CPU_US us/request"
  kill -TERM $SERVE; wait $SERVE || true

  for peer in vectorized notebook; do
    if [ $peer = vectorized ]; then COUNT=$NV; else COUNT=$NN; fi
    broker_mark
    run $PY bench/python/peer_$peer.py --ratings "$RATINGS" --items "$ITEMS" --brokers $B \
      --input-topic bench-requests --output-topic out-$peer-$round --group-id bench-$peer-$round --max-messages $COUNT \
      | tee target/bench-peer.json
    SHARE=$(broker_share)
    # The peer's own CPU from its first message (its start-up, a surprise
    # model trained in Python, is not counted).
    echo "$peer $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["cpu_us_per_message"])' target/bench-peer.json) $SHARE" >>$CPUS
    run $R bench replies --brokers $B --topic out-$peer-$round --expect $COUNT | tee -a target/bench-replies.json
    echo "$peer $(tail -1 target/bench-replies.json)" >>$RATES
  done
done
echo; echo "-- summary (replies/s from the replies' timestamps)"
python3 - "$RATES" <<'PY'
import json, statistics, sys
rates = {}
for line in open(sys.argv[1]):
    peer, _, doc = line.partition(" ")
    rates.setdefault(peer, []).append(json.loads(doc)["rate_per_second"])
med = {p: statistics.median(v) for p, v in rates.items()}
for p, v in rates.items():
    print(f"{p:>11}: median {med[p]:>9.0f}/s  runs " + ", ".join(f"{x:.0f}" for x in v))
for p in ("vectorized", "notebook"):
    print(f"recstream / {p}: {med['recstream'] / med[p]:.1f}x at the median")
PY
echo; echo "-- CPU per request (process user+sys / replies; recstream: whole process; peers: from their first message) and the broker's CPU share of one core during each run"
# One row per consumer and round, for bench/plot.py.
python3 - "$RATES" "$CPUS" "$RESULTS/throughput.csv" <<'PY'
import json, sys
rates = [(l.split(" ", 1)[0], json.loads(l.split(" ", 1)[1])["rate_per_second"]) for l in open(sys.argv[1])]
cpus = [l.split() for l in open(sys.argv[2])]
rounds = {}
with open(sys.argv[3], "w") as out:
    out.write("consumer,round,replies_per_second,cpu_us_per_request,broker_core_share\n")
    for (peer, rate), (peer2, us, share) in zip(rates, cpus):
        assert peer == peer2, (peer, peer2)
        rounds[peer] = rounds.get(peer, 0) + 1
        out.write(f"{peer},{rounds[peer]},{rate:.0f},{us},{share}\n")
PY
python3 - "$CPUS" <<'PY'
import statistics, sys
cpu, share = {}, {}
for line in open(sys.argv[1]):
    peer, us, broker = line.split()
    cpu.setdefault(peer, []).append(float(us))
    share.setdefault(peer, []).append(float(broker))
med = {p: statistics.median(v) for p, v in cpu.items()}
for p, v in cpu.items():
    print(f"{p:>11}: median {med[p]:>8.1f} us/request  runs " + ", ".join(f"{x:.1f}" for x in v)
          + f"; broker {statistics.median(share[p]):.2f} of a core")
for p in ("vectorized", "notebook"):
    print(f"{p} / recstream: {med[p] / med['recstream']:.1f}x the CPU per request at the median")
PY

echo; echo "== Latency at a steady 1,000 requests/s for $LAT_SECONDS s (microseconds)"
for t in echo-tansu lat-in lat-out lat-dlq; do topic $t; done
echo "-- Tansu alone: produce to a topic and read it back (the broker's own round trip)"
# Unbatched clients throughout (linger.ms=0), for the latency floor over 30 s;
# bench/sustained.sh measures the embedded start's default, batching, setup
# over 10 minutes.
L0="--kafka linger.ms=0"
run $R bench latency --brokers $B --input-topic echo-tansu --output-topic echo-tansu --rate 1000 --duration $LAT_SECONDS $L0 | tee target/bench-lat.json
keep target/bench-lat.json latency-tansu-alone.json
echo "-- recstream through Tansu (latency settings: no producer linger; short fetch waits, since this broker does not end a fetch wait early when data arrives)"
$R serve --brokers $B --model $MODEL --input-topic lat-in --output-topic lat-out --dlq-topic lat-dlq \
  --group-id bench-latency --kafka session.timeout.ms=6000 --kafka linger.ms=0 --kafka fetch.wait.max.ms=1 2>target/bench-serve-lat.log &
SERVE=$!; PIDS+=($SERVE)
wait_assigned target/bench-serve-lat.log
run $R bench latency --brokers $B --input-topic lat-in --output-topic lat-out --rate 1000 --duration $LAT_SECONDS $L0 | tee target/bench-lat.json
keep target/bench-lat.json latency-tansu-recstream.json
kill -TERM $SERVE; wait $SERVE || true

echo "-- embedded broker (librdkafka mock cluster over loopback TCP), same settings; three runs, each on a fresh broker"
for i in 1 2 3; do
  echo "-- run $i"
  # A data folder of its own: `run` resumes from the snapshot an earlier run
  # left there, whose offsets a fresh broker does not have.
  rm -rf target/bench-run-data
  $R run --model $MODEL --data-dir target/bench-run-data --partitions 4 --kafka linger.ms=0 --kafka fetch.wait.max.ms=1 >target/bench-run.out 2>target/bench-run.log &
  RUN=$!; PIDS+=($RUN)
  wait_assigned target/bench-run.log
  MB=$(grep -m1 '^  broker' target/bench-run.out | awk '{print $2}')
  run $R bench latency --brokers $MB --input-topic recommendation-events-dlq --output-topic recommendation-events-dlq --rate 1000 --duration $LAT_SECONDS $L0 | tee target/bench-lat.json
  keep target/bench-lat.json latency-embedded-alone-$i.json
  run $R bench latency --brokers $MB --rate 1000 --duration $LAT_SECONDS $L0 | tee target/bench-lat.json
  keep target/bench-lat.json latency-embedded-recstream-$i.json
  kill -TERM $RUN; wait $RUN || true
done
