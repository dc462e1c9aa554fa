#!/usr/bin/env bash
# Two builds of `recstream serve`, paired through one Tansu broker process:
# CPU per request (whole process user+sys over its replies) and reply rate,
# the two binaries alternating A B A B ..., with medians and the A/B ratio
# of each pair. For before/after claims about the serving hot path.
#
#   bash bench/serve_ab.sh OLD_BINARY NEW_BINARY [ROUNDS]   # ~1 min a round
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
A=$(realpath "$1"); B=$(realpath "$2"); ROUNDS=${3:-3}
N=${N:-200000}
R=$A
$R data fetch ml-100k --dir data >/dev/null
if [ -f data/ml-100k/u.data ]; then RATINGS=data/ml-100k/u.data ITEMS=data/ml-100k/u.item
else RATINGS=data/ml-100k/ml-100k.inter ITEMS=data/ml-100k/ml-100k.item; fi
MODEL=target/bench-model.rsm
mkdir -p target
$R train --ratings "$RATINGS" --items "$ITEMS" --out $MODEL --seed 1 --quiet
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER=127.0.0.1:$PORT
tansu broker --listener-url tcp://$BROKER --advertised-listener-url tcp://$BROKER --storage-engine memory://tansu/ >target/serve-ab-tansu.log 2>&1 &
TANSU=$!
trap 'kill -9 $TANSU 2>/dev/null || true' EXIT
sleep 1
topic() { tansu topic create "$1" --broker tcp://$BROKER --partitions "${2:-4}" "${@:3}" >/dev/null; }
topic requests; topic dead-letters
topic model-updates 1 --config cleanup.policy=compact; topic model-files 1
echo "\$ $R produce --brokers $BROKER --topic requests --uids 1..943 --count $N"
$R produce --brokers $BROKER --topic requests --uids 1..943 --count "$N" >/dev/null
HZ=$(getconf CLK_TCK)
RESULTS=target/serve-ab.txt; : >$RESULTS
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    if [ $side = A ]; then BIN=$A; else BIN=$B; fi
    out=out-$side-$round; topic $out
    "$BIN" serve --brokers $BROKER --model $MODEL --input-topic requests --output-topic $out \
      --dlq-topic dead-letters --group-id ab-$side-$round --kafka session.timeout.ms=6000 2>target/serve-ab-$side.log &
    SERVE=$!
    RATE=$("$A" bench replies --brokers $BROKER --topic $out --expect "$N" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["rate_per_second"]))')
    CPU=$(awk -v n="$N" -v hz="$HZ" '{printf "%.2f", ($14 + $15) / hz * 1e6 / n}' /proc/$SERVE/stat)
    kill -TERM $SERVE; wait $SERVE || true
    echo "round $round $side: $CPU us/request, $RATE replies/s"
    echo "$round $side $CPU $RATE" >>$RESULTS
  done
done
python3 - "$RESULTS" <<'EOF'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1])]
def side(s, col): return [float(r[col]) for r in rows if r[1] == s]
for name, col, unit in [("CPU per request", 2, "us"), ("replies/s", 3, "/s")]:
    a, b = side("A", col), side("B", col)
    ratios = [x / y for x, y in zip(a, b)]
    print(f"{name}: A median {statistics.median(a):g} {unit}, B median {statistics.median(b):g} {unit}, "
          f"A/B per pair {', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})")
EOF
