#!/usr/bin/env python3
"""Python peer for recstream's training benchmarks: scikit-surprise SVD.

Two modes, each printing exactly one JSON object on stdout:

fit (default)
    Load the ratings, build the full trainset, time ``SVD().fit(trainset)``
    (surprise defaults: 100 factors, 20 epochs, lr 0.005, reg 0.02) --repeat
    times::

        {"peer": "surprise", "mode": "fit", "surprise_version": ...,
         "fit_seconds": [...], "median_fit_seconds": ..., "load_seconds": ...,
         "build_trainset_seconds": ..., "process_seconds": ...}

cv (--cv K)
    ``cross_validate(SVD(), data, measures=['RMSE', 'MAE'],
    cv=KFold(K, random_state=SEED, shuffle=True))``; top-level rmse / mae /
    fit_seconds / test_seconds are the means over "folds".

The ratings file may be recbole's ml-100k.inter (typed header) or GroupLens
u.data (no header); the format is sniffed. process_seconds is wall time since
the interpreter started (includes imports), read from /proc.

    python surprise_train.py --ratings ml-100k.inter --repeat 5
    python surprise_train.py --ratings ml-100k.inter --cv 5 --seed 0
"""

import argparse
import json
import platform
import statistics
import time

from peer_common import load_ratings, process_seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratings", required=True,
                    help="ratings file (recbole .inter or GroupLens u.data)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="fit mode: number of timed fits (default 1)")
    ap.add_argument("--cv", type=int, default=None, metavar="K",
                    help="run K-fold cross-validation instead of timing fits")
    ap.add_argument("--seed", type=int, default=0,
                    help="cv mode: KFold random_state (default 0)")
    ap.add_argument("--svd-seed", type=int, default=None,
                    help="SVD random_state (default: None, i.e. plain SVD() as in the "
                         "reference; set it for bit-reproducible runs)")
    args = ap.parse_args()

    import numpy
    import surprise
    from surprise import SVD

    t0 = time.perf_counter()
    data = load_ratings(args.ratings)
    load_seconds = time.perf_counter() - t0

    out = {
        "peer": "surprise",
        "surprise_version": surprise.__version__,
        "numpy_version": numpy.__version__,
        "python_version": platform.python_version(),
        "ratings": args.ratings,
        "n_ratings": len(data.raw_ratings),
        "load_seconds": round(load_seconds, 4),
    }

    if args.cv is None:
        fits = []
        t0 = time.perf_counter()
        trainset = data.build_full_trainset()
        out["build_trainset_seconds"] = round(time.perf_counter() - t0, 4)
        out["n_users"], out["n_items"] = trainset.n_users, trainset.n_items
        for _ in range(max(1, args.repeat)):
            algo = SVD(random_state=args.svd_seed)
            t0 = time.perf_counter()
            algo.fit(trainset)
            fits.append(time.perf_counter() - t0)
        out.update({
            "mode": "fit",
            "repeat": len(fits),
            "fit_seconds": [round(s, 4) for s in fits],
            "median_fit_seconds": round(statistics.median(fits), 4),
        })
    else:
        from surprise.model_selection import KFold, cross_validate

        res = cross_validate(SVD(random_state=args.svd_seed), data,
                             measures=["RMSE", "MAE"],
                             cv=KFold(args.cv, random_state=args.seed, shuffle=True),
                             verbose=False)
        folds = [{"fold": i,
                  "rmse": round(float(res["test_rmse"][i]), 6),
                  "mae": round(float(res["test_mae"][i]), 6),
                  "fit_seconds": round(float(res["fit_time"][i]), 4),
                  "test_seconds": round(float(res["test_time"][i]), 4)}
                 for i in range(args.cv)]
        mean = lambda key: statistics.fmean(f[key] for f in folds)  # noqa: E731
        out.update({
            "mode": "cv",
            "cv": args.cv,
            "seed": args.seed,
            "rmse": round(mean("rmse"), 6),
            "mae": round(mean("mae"), 6),
            "fit_seconds": round(mean("fit_seconds"), 4),
            "test_seconds": round(mean("test_seconds"), 4),
            "folds": folds,
        })

    out["svd_seed"] = args.svd_seed
    out["process_seconds"] = process_seconds()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
