#!/usr/bin/env bash
# The long run of the fault suite (crates/cli/tests/faults.rs): 100 cycles
# of kill -9 and restart of workers and the learner, and broker outages,
# under steady request and rating load on the embedded broker, then the
# same checks as in CI (every request answered, every rating applied once,
# workers identical to a fresh replay, memory bounded). RELIABILITY.md
# quotes its summary lines.
#
#   bash bench/soak.sh [CYCLES] [RATE]   # 100 cycles at CI's 150/s by default
#
# (Until the embedded broker was recstream-broker, soaks ran at 60/s and
# still failed: librdkafka's mock cluster slowed down as its partitions grew
# and its group coordinator stalled or aborted under the churn.)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
CYCLES="${1:-100}"
RATE="${2:-150}"
mkdir -p bench/results/soak
out="bench/results/soak/$(date +%Y%m%d-%H%M%S).txt"
echo "\$ FAULT_CYCLES=$CYCLES FAULT_RATE=$RATE cargo test --locked -p recstream --test faults -- --nocapture"
FAULT_CYCLES="$CYCLES" FAULT_RATE="$RATE" cargo test --locked -p recstream --test faults -- --nocapture 2>&1 \
  | tee "$out" | grep -E "fault suite|test result"
echo "full output: $out"
