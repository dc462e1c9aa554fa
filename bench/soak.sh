#!/usr/bin/env bash
# The long run of the fault suite (crates/cli/tests/faults.rs): 100 cycles
# of kill -9 and restart of workers and the learner, and broker outages,
# under steady request and rating load on the embedded broker, then the
# same checks as in CI (every request answered, every rating applied once,
# workers identical to a fresh replay, memory bounded). RELIABILITY.md
# quotes its summary lines.
#
#   bash bench/soak.sh [CYCLES] [RATE]   # 100 cycles at 60/s: about 8 minutes on 2 cores
#
# The rate is lower than CI's 150/s because the embedded broker (librdkafka's
# mock cluster) slows down as its partitions grow and, after a few minutes at
# 150 requests + 150 ratings a second, stops answering group joins in time.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
CYCLES="${1:-100}"
RATE="${2:-60}"
mkdir -p bench/results
out="bench/results/soak-$(date +%Y%m%d-%H%M%S).txt"
echo "\$ FAULT_CYCLES=$CYCLES FAULT_RATE=$RATE cargo test --locked -p recstream --test faults -- --nocapture"
FAULT_CYCLES="$CYCLES" FAULT_RATE="$RATE" cargo test --locked -p recstream --test faults -- --nocapture 2>&1 \
  | tee "$out" | grep -E "fault suite|test result"
echo "full output: $out"
