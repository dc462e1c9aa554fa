#!/usr/bin/env bash
# The long run of the fault suite (crates/cli/tests/faults.rs): 100 cycles
# of kill -9 and restart of workers and the learner, and broker outages,
# under steady request and rating load on the embedded broker, then the
# same checks as in CI (every request answered, every rating applied once,
# workers identical to a fresh replay, memory bounded). RELIABILITY.md
# quotes its summary lines.
#
#   bash bench/soak.sh [CYCLES]     # 100 cycles: about 10 minutes on 2 cores
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
CYCLES="${1:-100}"
mkdir -p bench/results
out="bench/results/soak-$(date +%Y%m%d-%H%M%S).txt"
echo "\$ FAULT_CYCLES=$CYCLES cargo test --locked -p recstream --test faults -- --nocapture"
FAULT_CYCLES="$CYCLES" cargo test --locked -p recstream --test faults -- --nocapture 2>&1 \
  | tee "$out" | grep -E "fault suite|test result"
echo "full output: $out"
