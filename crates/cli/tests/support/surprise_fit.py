"""Trains a surprise SVD on synthetic ratings, exports it, and writes surprise's predictions.

Used by crates/cli/tests/surprise.rs (and for the ML-100K-sized measurement
in its report): the test imports the export with the real binary and
compares every prediction written here with the model's estimate.

    python surprise_fit.py OUT_DIR USERS ITEMS RATINGS FACTORS EPOCHS SEED [all]

Writes OUT_DIR/model.npz and OUT_DIR/predictions.tsv (uid, iid, repr of
surprise's predict(uid, iid).est): the held-out ratings (10 %), pairs with an
unknown user, an unknown item and both, and with "all" every known
user x item pair.
"""

import os
import sys

import numpy as np
from surprise import SVD, Dataset, Reader

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "..", "python"))
import recstream_surprise  # noqa: E402


def main():
    out_dir = sys.argv[1]
    users, items, ratings, factors, epochs, seed = (int(a) for a in sys.argv[2:8])
    every_pair = len(sys.argv) > 8 and sys.argv[8] == "all"
    rng = np.random.default_rng(seed)
    # Low-rank structure plus noise, rounded to stars: something SVD can learn.
    p = rng.normal(0, 0.6, (users, 3))
    q = rng.normal(0, 0.6, (items, 3))
    pairs = {}
    while len(pairs) < ratings:
        u, i = int(rng.integers(users)), int(rng.integers(items))
        pairs[(u, i)] = float(np.clip(np.rint(3.5 + p[u] @ q[i] + rng.normal(0, 0.7)), 1, 5))
    keys = list(pairs)
    rng.shuffle(keys)
    n_test = len(keys) // 10
    test, train = keys[:n_test], keys[n_test:]
    train_file = os.path.join(out_dir, "train.tsv")
    with open(train_file, "w") as f:
        for u, i in train:
            f.write(f"{u + 1}\t{i + 1}\t{pairs[(u, i)]:g}\n")
    reader = Reader(line_format="user item rating", sep="\t", rating_scale=(1, 5))
    trainset = Dataset.load_from_file(train_file, reader).build_full_trainset()
    algo = SVD(n_factors=factors, n_epochs=epochs, random_state=seed).fit(trainset)
    titles = {str(i + 1): f"Movie {i + 1}" for i in range(items)}
    recstream_surprise.export(algo, trainset, os.path.join(out_dir, "model.npz"), items=titles)

    checked = [(str(u + 1), str(i + 1)) for u, i in test]
    known_items = [trainset.to_raw_iid(i) for i in range(min(trainset.n_items, 50))]
    known_users = [trainset.to_raw_uid(u) for u in range(min(trainset.n_users, 50))]
    checked += [("no-such-user", i) for i in known_items]
    checked += [(u, "no-such-item") for u in known_users]
    checked += [("no-such-user", "no-such-item")]
    if every_pair:
        checked += [
            (trainset.to_raw_uid(u), trainset.to_raw_iid(i))
            for u in range(trainset.n_users)
            for i in range(trainset.n_items)
        ]
    with open(os.path.join(out_dir, "predictions.tsv"), "w") as f:
        for uid, iid in checked:
            f.write(f"{uid}\t{iid}\t{float(algo.predict(uid, iid).est)!r}\n")


if __name__ == "__main__":
    main()
