#!/usr/bin/env bash
# Sustained load on the one-command start: `recstream run` on its embedded
# broker, 1,000 requests/s for DURATION seconds, then 1,000 ratings/s plus
# 1,000 requests/s for DURATION seconds, with a line a minute: latency and
# freshness percentiles of that minute, and the CPU the broker's thread used
# in it. BENCHMARKS.md quotes its output.
#
#   bash bench/sustained.sh                  # 2 x 10 minutes, about 22 minutes
#   DURATION=120 EVERY=20 bash bench/sustained.sh
#   RUN_ARGS="--kafka linger.ms=0" LOAD_ARGS="--kafka linger.ms=0" bash bench/sustained.sh
#   RECSTREAM=/path/to/other/recstream bash bench/sustained.sh   # an older build, same script
#   BROKER=tansu bash bench/sustained.sh     # `run --brokers` on a Tansu process instead
#
# RUN_ARGS go to `recstream run`, LOAD_ARGS to the load generators
# (`bench latency` and `bench freshness`). PHASES picks "latency",
# "freshness" or both (the default). With BROKER=tansu, `run` uses a Tansu
# 0.6 process (memory storage) with the same topic layout and client
# batching, and the broker CPU column is that process's.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
DURATION=${DURATION:-600}
EVERY=${EVERY:-60}
RATE=${RATE:-1000}
PHASES=${PHASES:-latency freshness}
RUN_ARGS=${RUN_ARGS:-}
LOAD_ARGS=${LOAD_ARGS:-}
# A load generator still waiting for replies this long after it stopped
# sending is stopped: the broker has fallen behind for good (its per-window
# lines are printed all the same).
LIMIT=${LIMIT:-$((DURATION * 2 + 60))}
if [ -z "${RECSTREAM:-}" ]; then
  cargo build --release --locked -q -p recstream
  RECSTREAM=target/release/recstream
fi
R=$RECSTREAM
# Everything printed is also kept (BENCHMARKS.md names the file it quotes).
mkdir -p bench/results/sustained
exec > >(tee "bench/results/sustained/$(date +%Y%m%d-%H%M%S).txt")
work=target/sustained
rm -rf "$work"; mkdir -p "$work"
# The MovieLens model is trained once under data/ and shared with other runs;
# snapshots go to a fresh folder so every run starts from the same model.
mkdir -p data
if [ ! -e "$work/data" ]; then mkdir -p "$work/data"; fi
for f in data/ml-100k data/ml-100k.rsm; do [ -e "$f" ] && ln -sfn "$PWD/$f" "$work/data/"; done

# The embedded broker's thread, as /proc shows its name (15 characters):
# recstream-broker since it replaced librdkafka's mock (rdk:mock); set
# BROKER_THREAD=rdk:mock with RECSTREAM= an older build.
BROKER_THREAD=${BROKER_THREAD:-recstream-broke}
TANSU=
if [ "${BROKER:-embedded}" = tansu ]; then
  PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  TB=127.0.0.1:$PORT
  tansu broker --listener-url tcp://$TB --advertised-listener-url tcp://$TB --storage-engine memory://tansu/ \
    >"$work/tansu.log" 2>&1 &
  TANSU=$!
  sleep 1
  # Tansu's fetch waits sleep their full length and its group joins need a
  # 6 s session: short fetch waits, as in bench/stream.sh.
  RUN_ARGS="--brokers $TB --partitions 1 --kafka session.timeout.ms=6000 --kafka fetch.wait.max.ms=1 --kafka linger.ms=5 $RUN_ARGS"
  LOAD_ARGS="--kafka fetch.wait.max.ms=1 $LOAD_ARGS"
fi

# shellcheck disable=SC2086
$R run --data-dir "$work/data" $RUN_ARGS >"$work/run.out" 2>"$work/run.err" &
RUN=$!
trap 'kill -TERM $RUN 2>/dev/null; wait $RUN 2>/dev/null || true; [ -z "$TANSU" ] || kill -9 $TANSU 2>/dev/null || true' EXIT
for _ in $(seq 600); do grep -q "^  broker" "$work/run.out" 2>/dev/null && break; sleep 0.5; done
B=$(awk '/^  broker/ {print $2; exit}' "$work/run.out")
[ -n "$B" ] || { echo "recstream run did not start:"; cat "$work/run.err"; exit 1; }
for _ in $(seq 600); do grep -q "partitions assigned" "$work/run.err" && break; sleep 0.1; done

# CPU (user+sys, in % of one core) of the embedded broker's thread(s) and of
# the whole `run` process over each window.
summary() { # a run's JSON without its windows (they were printed as they closed)
  [ -s "$1" ] || { echo "(none)"; return; }
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); d.pop("windows", None); print(json.dumps(d))' "$1"
}
ticks() { # pid [comm]: clock ticks of the process, or of its threads named comm
  if [ -n "${2:-}" ]; then
    for t in /proc/"$1"/task/*; do
      if [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ]; then awk '{print $14 + $15}' "$t/stat" 2>/dev/null || true; fi
    done | awk '{s += $1} END {print s + 0}'
  else
    awk '{print $14 + $15}' /proc/"$1"/stat
  fi
}
sample_cpu() { # label
  local hz; hz=$(getconf CLK_TCK)
  local m0 p0 m1 p1 i=0
  broker() { if [ -n "$TANSU" ]; then ticks "$TANSU"; else ticks $RUN "$BROKER_THREAD"; fi; }
  local start; start=$(date +%s%N)
  m0=$(broker); p0=$(ticks $RUN)
  report() { # the window that ended now, however long it was
    local now; now=$(date +%s%N)
    local ms=$(( (now - start) / 1000000 )); [ "$ms" -gt 0 ] || return 0
    m1=$(broker) || return 0; p1=$(ticks $RUN) || return 0
    i=$((i + (ms + 500) / 1000))
    echo "[$(printf '%4d' $i) s] $1 cpu: broker thread $(( (m1 - m0) * 1000 * 100 / hz / ms ))%, whole run process $(( (p1 - p0) * 1000 * 100 / hz / ms ))%" >&2
    m0=$m1; p0=$p1; start=$now
  }
  trap 'report "$1"; exit 0' TERM
  while true; do
    sleep "$EVERY" & wait $!
    report "$1"
  done
}

where="its embedded broker"; [ -z "$TANSU" ] || where="a Tansu $(tansu --version | cut -d' ' -f2) process"
echo "== recstream run ($($R --version)) on $where at $B; $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "   run args: ${RUN_ARGS:-none}; load generator args: ${LOAD_ARGS:-none}"
[ -z "$TANSU" ] || echo "   (broker cpu below: the whole Tansu process)"
for phase in $PHASES; do
  case $phase in
    latency)
      echo; echo "== $RATE requests/s for $DURATION s"
      echo "\$ $R bench latency --brokers $B --rate $RATE --duration $DURATION --every $EVERY $LOAD_ARGS"
      sample_cpu latency & SAMPLER=$!
      # shellcheck disable=SC2086
      timeout "$LIMIT" $R bench latency --brokers "$B" --rate "$RATE" --duration "$DURATION" --every "$EVERY" $LOAD_ARGS \
        >"$work/latency.json" || echo "bench latency did not finish within $LIMIT s"
      kill $SAMPLER 2>/dev/null || true
      echo "whole run: $(summary "$work/latency.json")"
      ;;
    freshness)
      echo; echo "== $RATE ratings/s plus $RATE requests/s for $DURATION s"
      echo "\$ $R bench freshness --brokers $B --rate $RATE --duration $DURATION --every $EVERY $LOAD_ARGS &"
      echo "\$ $R bench latency --brokers $B --rate $RATE --duration $DURATION --every $EVERY $LOAD_ARGS"
      sample_cpu "ratings+requests" & SAMPLER=$!
      # shellcheck disable=SC2086
      timeout "$LIMIT" $R bench freshness --brokers "$B" --rate "$RATE" --duration "$DURATION" --every "$EVERY" $LOAD_ARGS \
        >"$work/freshness.json" 2> >(sed -u 's/^/freshness /' >&2) &
      FRESH=$!
      # shellcheck disable=SC2086
      timeout "$LIMIT" $R bench latency --brokers "$B" --rate "$RATE" --duration "$DURATION" --every "$EVERY" $LOAD_ARGS \
        >"$work/latency-with-ratings.json" 2> >(sed -u 's/^/latency   /' >&2) || echo "bench latency did not finish within $LIMIT s"
      wait $FRESH || true
      kill $SAMPLER 2>/dev/null || true
      echo "whole run, freshness: $(summary "$work/freshness.json")"
      echo "whole run, latency:   $(summary "$work/latency-with-ratings.json")"
      ;;
  esac
done
echo; echo "recstream run peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$RUN/status)"
grep -E "WARN|ERROR" "$work/run.err" | head -20 || true
