#!/usr/bin/env bash
# The Kinesis path against kinesis-local, next to the same worker on Kafka
# (Tansu) in the same run: reply rate and CPU per request over a preloaded
# stream, then request-to-reply latency at a steady rate, at two poll
# intervals. Every command is printed before its output; BENCHMARKS.md
# quotes this. A local emulator (a Scala.js program on node) says little
# about AWS: the figures show what recstream adds, not what Kinesis does.
#
#   bash bench/kinesis.sh     # about 10 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
N=${N:-20000}          # preloaded requests per round
ROUNDS=${ROUNDS:-3}    # throughput rounds
RATE=${RATE:-200}      # requests/s for the latency runs
SECONDS_RUN=${SECONDS_RUN:-30}
run() { echo; echo "\$ $*"; "$@"; }

cargo build --release --locked -q -p recstream --features kinesis
R=target/release/recstream
MODEL=target/bench-model.rsm
if [ ! -f $MODEL ]; then
  $R data fetch ml-100k --dir data >/dev/null
  if [ -f data/ml-100k/u.data ]; then RATINGS=data/ml-100k/u.data ITEMS=data/ml-100k/u.item
  else RATINGS=data/ml-100k/ml-100k.inter ITEMS=data/ml-100k/ml-100k.item; fi
  $R train --ratings "$RATINGS" --items "$ITEMS" --out $MODEL --seed 1 --quiet
fi

SERVERS="${RECSTREAM_KINESIS_SERVERS:-$PWD/target/kinesis-servers}"
if [ ! -f "$SERVERS/node_modules/kinesis-local/main.js" ]; then
  npm install --prefix "$SERVERS" --no-audit --no-fund --silent kinesis-local@0.6.2 kinesalite@3.3.3
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
KPORT=$(free_port)
E=http://127.0.0.1:$KPORT
(cd "$SERVERS/node_modules/kinesis-local" && KINESIS_MOCK_PLAIN_PORT=$KPORT KINESIS_MOCK_TLS_PORT=$(free_port) \
  CREATE_STREAM_DURATION=50ms LOG_LEVEL=WARN exec node main.js >"$OLDPWD/target/bench-kinesis-local.log" 2>&1) &
KINESIS=$!
TPORT=$(free_port)
B=127.0.0.1:$TPORT
tansu broker --listener-url tcp://$B --advertised-listener-url tcp://$B --storage-engine memory://tansu/ >target/bench-tansu.log 2>&1 &
TANSU=$!
PIDS=()
cleanup() { for p in "${PIDS[@]}" $TANSU $KINESIS; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
for _ in $(seq 100); do curl -s -o /dev/null $E && break; sleep 0.2; done
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
now_ns() { date +%s%N; }
# The server's (kinesis-local's or Tansu's) CPU, as a share of one core, since server_mark.
server_mark() { ST0=$(cpu_ticks $1); SW0=$(now_ns); }
server_share() { python3 -c "print(f'{($(cpu_ticks $1) - $ST0) / $HZ / (($(now_ns) - $SW0) / 1e9):.2f}')"; }
METRICS=127.0.0.1:$(free_port)
wait_ready() { for _ in $(seq 600); do curl -sf http://$METRICS/readyz >/dev/null && return 0; sleep 0.1; done; echo "not ready" >&2; return 1; }
replies() { curl -s http://$METRICS/metrics | awk '$1 == "recstream_replies_produced_total" {print $2}'; }
wait_replies() { for _ in $(seq 6000); do [ "$(replies)" = "$1" ] && return 0; sleep 0.1; done; echo "only $(replies) replies" >&2; return 1; }
# Rate from the replies' arrival timestamps, first to last, and every id answered.
REPORT=target/bench-kinesis.txt; : >$REPORT
rate_of() {  # <label> <json lines of replies> <expected count>
  python3 - "$@" <<'EOF'
import json, sys
label, path, expect = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(l) for l in open(path) if l.strip()]
ids = {json.loads(r["payload"])["request_id"] for r in rows}
ts = sorted(r["timestamp"] for r in rows)
secs = max((ts[-1] - ts[0]) / 1000, 1e-3)
print(f"{label}: {len(ids)}/{expect} requests answered, {len(rows)} replies, {len(rows) / secs:,.0f} replies/s")
EOF
}

echo "== kinesis-local 0.6.2 at $E (node $(node --version)), tansu $(tansu --version | cut -d' ' -f2) at $B; CPU:$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) cores"
tansu topic create bench-requests --broker tcp://$B --partitions 4 >/dev/null
tansu topic create dead-letters --broker tcp://$B --partitions 4 >/dev/null
run $R produce --topic kinesis:bench-requests --kinesis-endpoint $E --create-topics --partitions 4 --uids 1..943 --count $N
run $R produce --brokers $B --topic bench-requests --uids 1..943 --count $N

echo; echo "== Throughput: $N preloaded requests, 4 shards / 4 partitions, $ROUNDS rounds"
for round in $(seq $ROUNDS); do
  echo; echo "-- round $round"
  CP=target/bench-kinesis-checkpoint-$round.json; rm -f $CP $CP.lock
  $R serve --model $MODEL --no-follow --create-topics --partitions 4 --input-topic kinesis:bench-requests \
    --output-topic kinesis:out-$round --dlq-topic kinesis:dead-letters --kinesis-endpoint $E \
    --kinesis-checkpoint $CP --metrics-addr $METRICS 2>target/bench-serve-kinesis.log &
  SERVE=$!; PIDS+=($SERVE); server_mark $KINESIS
  echo "\$ $R serve --model $MODEL --no-follow --create-topics --partitions 4 --input-topic kinesis:bench-requests --output-topic kinesis:out-$round --dlq-topic kinesis:dead-letters --kinesis-endpoint \$E --kinesis-checkpoint $CP"
  wait_ready; wait_replies $N
  CPU_US=$(python3 -c "print(f'{$(cpu_ticks $SERVE) / $HZ * 1e6 / $N:.1f}')"); SHARE=$(server_share $KINESIS)
  kill -TERM $SERVE; wait $SERVE || true
  $R consume --topic kinesis:out-$round --from-beginning --kinesis-endpoint $E --format json --idle-timeout 3 2>/dev/null >target/bench-kinesis-replies.json
  echo "kinesis round $round: $(rate_of kinesis target/bench-kinesis-replies.json $N), CPU $CPU_US us/request, kinesis-local $SHARE of a core" | tee -a $REPORT

  tansu topic create out-$round --broker tcp://$B --partitions 4 >/dev/null
  $R serve --brokers $B --model $MODEL --no-follow --input-topic bench-requests --output-topic out-$round \
    --dlq-topic dead-letters --group-id bench-kafka-$round --kafka session.timeout.ms=6000 --metrics-addr $METRICS 2>target/bench-serve-kafka.log &
  SERVE=$!; PIDS+=($SERVE); server_mark $TANSU
  echo "\$ $R serve --brokers \$TANSU --model $MODEL --no-follow --input-topic bench-requests --output-topic out-$round --dlq-topic dead-letters --group-id bench-kafka-$round --kafka session.timeout.ms=6000"
  wait_ready; wait_replies $N
  CPU_US=$(python3 -c "print(f'{$(cpu_ticks $SERVE) / $HZ * 1e6 / $N:.1f}')"); SHARE=$(server_share $TANSU)
  kill -TERM $SERVE; wait $SERVE || true
  $R consume --brokers $B --topic out-$round --from-beginning --format json --idle-timeout 3 2>/dev/null >target/bench-kafka-replies.json
  echo "kafka (tansu) round $round: $(rate_of kafka target/bench-kafka-replies.json $N), CPU $CPU_US us/request, tansu $SHARE of a core" | tee -a $REPORT
done

echo; echo "== Latency: $RATE requests/s for $SECONDS_RUN s, request arrival to reply arrival (Kinesis's own timestamps, ms)"
for poll in 250ms 200ms; do
  CP=target/bench-kinesis-checkpoint-lat-$poll.json; rm -f $CP $CP.lock
  $R serve --model $MODEL --no-follow --create-topics --partitions 4 --input-topic kinesis:lat-in-$poll \
    --output-topic kinesis:lat-out-$poll --dlq-topic kinesis:dead-letters --kinesis-endpoint $E \
    --kinesis-checkpoint $CP --kinesis-poll $poll --metrics-addr $METRICS 2>target/bench-serve-kinesis-lat.log &
  SERVE=$!; PIDS+=($SERVE)
  echo; echo "\$ $R serve ... --input-topic kinesis:lat-in-$poll --output-topic kinesis:lat-out-$poll --kinesis-poll $poll"
  wait_ready
  T0=$(cpu_ticks $SERVE); server_mark $KINESIS
  run $R produce --topic kinesis:lat-in-$poll --kinesis-endpoint $E --uids 1..943 --rate $RATE --count $((RATE * SECONDS_RUN)) --id-prefix lat
  wait_replies $((RATE * SECONDS_RUN))
  CPU_US=$(python3 -c "print(f'{($(cpu_ticks $SERVE) - $T0) / $HZ * 1e6 / ($RATE * $SECONDS_RUN):.1f}')"); SHARE=$(server_share $KINESIS)
  kill -TERM $SERVE; wait $SERVE || true
  $R consume --topic kinesis:lat-in-$poll --from-beginning --kinesis-endpoint $E --format json --idle-timeout 3 2>/dev/null >target/bench-lat-in.json
  $R consume --topic kinesis:lat-out-$poll --from-beginning --kinesis-endpoint $E --format json --idle-timeout 3 2>/dev/null >target/bench-lat-out.json
  python3 - $poll $CPU_US $SHARE <<'EOF' | tee -a $REPORT
import json, sys
poll, cpu, share = sys.argv[1], sys.argv[2], sys.argv[3]
def rows(path):
    return [json.loads(l) for l in open(path) if l.strip()]
sent = {json.loads(r["payload"])["request_id"]: r["timestamp"] for r in rows("target/bench-lat-in.json")}
lat = sorted(r["timestamp"] - sent[json.loads(r["payload"])["request_id"]] for r in rows("target/bench-lat-out.json"))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"latency, --kinesis-poll {poll}: {len(lat)} replies, p50 {q(0.5)} ms, p90 {q(0.9)} ms, p99 {q(0.99)} ms, max {lat[-1]} ms; worker CPU {cpu} us/request at this rate, kinesis-local {share} of a core")
EOF
done

echo; echo "== Summary (medians of $ROUNDS rounds)"
python3 - <<'EOF'
import re, statistics
lines = open("target/bench-kinesis.txt").read().splitlines()
for path in ("kinesis", "kafka (tansu)"):
    mine = [l for l in lines if l.startswith(path + " round")]
    rates = [float(re.search(r"([\d,]+) replies/s", l).group(1).replace(",", "")) for l in mine]
    cpus = [float(re.search(r"CPU ([\d.]+) us", l).group(1)) for l in mine]
    print(f"{path}: replies/s {', '.join(f'{r:,.0f}' for r in rates)} (median {statistics.median(rates):,.0f}); "
          f"CPU us/request {', '.join(f'{c}' for c in cpus)} (median {statistics.median(cpus)})")
EOF
