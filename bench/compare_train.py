#!/usr/bin/env python3
"""Training speed, recstream against scikit-surprise, measured in the same run.

For each round this runs, back to back so both see the same machine load:
  * the whole `recstream train` process (reading the file, training with
    surprise's defaults, writing the model file), wall time around the process;
  * surprise's `SVD().fit(trainset)` on the same file, timed inside Python
    (loading the file and building the trainset are not counted for surprise).
It prints one JSON object with every sample, the medians and their ratio.

    bench/compare_train.py --recstream target/release/recstream \
        --python bench/python/.venv/bin/python --ratings data/ml-100k/ml-100k.inter
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def time_recstream(binary, ratings, threads, out):
    cmd = [binary, "train", "--ratings", ratings, "--out", out, "--quiet", "--threads", str(threads)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def time_surprise(python, ratings):
    cmd = [python, os.path.join(HERE, "python", "surprise_train.py"), "--ratings", ratings, "--repeat", "1"]
    result = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(result.stdout)["fit_seconds"][0]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recstream", required=True, help="path to the recstream binary (release build)")
    parser.add_argument("--python", required=True, help="python of the venv made by bench/python/setup.sh")
    parser.add_argument("--ratings", required=True, help="ratings file (u.data or ml-100k.inter)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="recstream training threads")
    args = parser.parse_args()

    rec, sur = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.rsm")
        time_recstream(args.recstream, args.ratings, args.threads, out)  # warm the page cache
        for _ in range(args.rounds):
            rec.append(time_recstream(args.recstream, args.ratings, args.threads, out))
            sur.append(time_surprise(args.python, args.ratings))
    report = {
        "ratings": args.ratings,
        "rounds": args.rounds,
        "recstream_threads": args.threads,
        "recstream_process_seconds": rec,
        "surprise_fit_seconds": sur,
        "median_recstream_process_seconds": statistics.median(rec),
        "median_surprise_fit_seconds": statistics.median(sur),
        "speedup_median": statistics.median(sur) / statistics.median(rec),
    }
    json.dump(report, sys.stdout)
    print()


if __name__ == "__main__":
    main()
