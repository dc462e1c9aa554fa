#!/usr/bin/env bash
# The long run of the fuzz suites: every parser of outside input (requests,
# ratings and dead letters on the wire, the ratings file readers, the model
# file decoder, the surprise `.npz` importer and its `.npy`/zip layers, the
# metrics endpoint, the embedded broker's request decoder) with many more
# cases than CI's 10,000 a target. RELIABILITY.md quotes the counts.
#
#   bash bench/fuzz.sh [CASES]     # 200,000 cases a target by default
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export PROPTEST_CASES="${1:-200000}"
echo "\$ PROPTEST_CASES=$PROPTEST_CASES cargo test --locked -p recstream-core --test fuzz_modelfile --test fuzz_ratings"
cargo test --locked -p recstream-core --test fuzz_modelfile --test fuzz_ratings 2>&1 | grep -E "^test |test result"
echo "\$ PROPTEST_CASES=$PROPTEST_CASES cargo test --locked -p recstream-stream --lib wire:: metrics::"
cargo test --locked -p recstream-stream --lib -- wire:: metrics:: 2>&1 | grep -E "^test |test result"
echo "\$ PROPTEST_CASES=$PROPTEST_CASES cargo test --locked -p recstream-core --lib npy:: npz:: surprise::"
cargo test --locked -p recstream-core --lib -- npy:: npz:: surprise:: 2>&1 | grep -E "^test |test result"
echo "\$ PROPTEST_CASES=$PROPTEST_CASES cargo test --locked -p recstream-broker --lib hostile"
cargo test --locked -p recstream-broker --lib hostile 2>&1 | grep -E "^test |test result"
