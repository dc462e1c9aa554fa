#!/usr/bin/env bash
# Recommender-core benchmarks, each side by side with its peer in the same run.
# Prints every command before its output; the numbers in BENCHMARKS.md come from here.
#
#   bash bench/core.sh            # everything (about 3 minutes on 2 cores)
#   QUICK=1 bash bench/core.sh    # skip the ML-25M-sized training
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo; echo "\$ $*"; "$@"; }

cargo build --release --locked -q -p recstream
R=target/release/recstream
run $R data fetch ml-100k --dir data
if [ -f data/ml-100k/u.data ]; then
  RATINGS=data/ml-100k/u.data ITEMS=data/ml-100k/u.item
else
  RATINGS=data/ml-100k/ml-100k.inter ITEMS=data/ml-100k/ml-100k.item
fi
bash bench/python/setup.sh
PY=${RECSTREAM_PY_VENV:-bench/python/.venv}/bin/python

echo; echo "== CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), kernel: $($R bench train --synthetic 10x10x50 --repeat 1 --n-factors 4 --json | $PY -c 'import json,sys; print(json.load(sys.stdin)["kernel"])')"

echo; echo "== Training ML-100K: whole recstream process vs surprise SVD().fit, alternating"
run $PY bench/compare_train.py --recstream $R --python $PY --ratings "$RATINGS" --rounds 7
run $PY bench/compare_train.py --recstream $R --python $PY --ratings "$RATINGS" --rounds 5 --threads 2

echo; echo "== 5-fold cross-validation, defaults"
run $PY bench/python/surprise_train.py --ratings "$RATINGS" --cv 5 --seed 0
for seed in 0 1 2; do run $R eval --ratings "$RATINGS" --folds 5 --seed $seed --json; done
run $R eval --ratings "$RATINGS" --folds 5 --seed 0 --reshuffle --json
run $R eval --ratings "$RATINGS" --folds 5 --seed 0 --threads 2 --json

echo; echo "== Top-10 latency, single thread"
run $R train --ratings "$RATINGS" --items "$ITEMS" --out target/bench-model.rsm --seed 1 --quiet
run $R bench topn --model target/bench-model.rsm --requests 20000
run $R bench topn --synthetic-items 60000 --factors 100 --requests 3000

if [ -z "${QUICK:-}" ]; then
  echo; echo "== ML-25M-sized synthetic training (162,000 users, 59,000 items, 25M ratings)"
  run /usr/bin/time -f "wall %e s, max RSS %M KiB" $R bench train --synthetic ml-25m --threads 2 --repeat 1 --seed 1
fi
