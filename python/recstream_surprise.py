"""Export a scikit-surprise ``SVD`` to the ``.npz`` that ``recstream model import`` reads.

Standard library and numpy only: the module does not import surprise, it only
reads the attributes of a fitted ``SVD`` and its ``Trainset``.

Usage in a notebook::

    from surprise import SVD, Dataset
    import recstream_surprise
    trainset = Dataset.load_builtin("ml-100k").build_full_trainset()
    algo = SVD(n_factors=100, random_state=0).fit(trainset)
    recstream_surprise.export(algo, trainset, "model.npz")

then ``recstream model import --surprise model.npz --out model.rsm``.

The format is a plain ``np.savez`` archive (no pickles, so loading it runs no
code), read by ``np.load``. Inner ids are row numbers; ``n_users``,
``n_items`` and ``k = n_factors`` come from the shapes.

==================== ====== ===================== ==============================
name                 dtype  shape                 meaning
==================== ====== ===================== ==============================
pu                   <f8    (n_users, k)          user factors
qi                   <f8    (n_items, k)          item factors
bu                   <f8    (n_users,)            user biases
bi                   <f8    (n_items,)            item biases
global_mean          <f8    ()                    mean training rating
user_ids             <U     (n_users,)            raw user ids (as str) in inner order
item_ids             <U     (n_items,)            raw item ids (as str) in inner order
rating_scale         <f8    (2,)                  lowest and highest rating
format_version       <i8    ()                    1
user_n_ratings       <i8    (n_users,)            training ratings per user
item_n_ratings       <i8    (n_items,)            training ratings per item
seen_offsets         <i8    (n_users + 1,)        CSR offsets into seen_items
seen_items           <i8    (n_seen,)             inner item ids each user rated, sorted per user
titles               <U     (n_items,)            optional: titles ("" when unknown)
n_factors, n_epochs  <i8    ()                    hyper-parameters ...
biased               |b1    ()
init_mean, init_std_dev, lr_bu, lr_bi, lr_pu, lr_qi, reg_bu, reg_bi, reg_pu, reg_qi: <f8, ()
random_state         <i8    ()                    only when it was an int
n_ratings            <i8    ()                    size of the training set
library, algorithm   <U     ()                    "scikit-surprise <version>", "SVD"
==================== ====== ===================== ==============================

recstream's own ``recstream model export --npz`` writes the same names, with
the factors and biases as ``<f4`` (the float32 values it scores with).
Raw ids are strings in recstream: a surprise model fitted on integer raw ids
(from a DataFrame) is exported with ``str(id)``.
"""

import sys

import numpy as np

FORMAT_VERSION = 1

_FLOAT_PARAMS = (
    "init_mean",
    "init_std_dev",
    "lr_bu",
    "lr_bi",
    "lr_pu",
    "lr_qi",
    "reg_bu",
    "reg_bi",
    "reg_pu",
    "reg_qi",
)


def _surprise_version():
    module = sys.modules.get("surprise")
    version = getattr(module, "__version__", None)
    return f"scikit-surprise {version}" if version else "scikit-surprise"


def export(algo, trainset, path, items=None):
    """Write the fitted ``SVD`` ``algo`` (trained on ``trainset``) to ``path``.

    ``items`` optionally maps raw item ids to titles. Only ``SVD`` is
    supported: ``SVDpp`` and ``NMF`` estimate differently.
    """
    if type(algo).__name__ != "SVD" or not hasattr(algo, "pu"):
        raise TypeError(
            f"expected a fitted surprise SVD, got {type(algo).__name__}"
            " (fit it first; SVDpp and NMF are not supported)"
        )
    n_users, n_items = trainset.n_users, trainset.n_items
    user_ids = [str(trainset.to_raw_uid(u)) for u in range(n_users)]
    raw_items = [trainset.to_raw_iid(i) for i in range(n_items)]
    item_ids = [str(raw) for raw in raw_items]
    seen_rows = [sorted({j for j, _ in trainset.ur[u]}) for u in range(n_users)]
    offsets = np.zeros(n_users + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(row) for row in seen_rows])
    seen = np.fromiter((j for row in seen_rows for j in row), dtype=np.int64, count=int(offsets[-1]))
    arrays = {
        "format_version": np.int64(FORMAT_VERSION),
        "pu": np.asarray(algo.pu, dtype=np.float64).reshape(n_users, algo.n_factors),
        "qi": np.asarray(algo.qi, dtype=np.float64).reshape(n_items, algo.n_factors),
        "bu": np.asarray(algo.bu, dtype=np.float64),
        "bi": np.asarray(algo.bi, dtype=np.float64),
        "global_mean": np.float64(trainset.global_mean),
        "user_ids": np.array(user_ids, dtype=str),
        "item_ids": np.array(item_ids, dtype=str),
        "rating_scale": np.array(trainset.rating_scale, dtype=np.float64),
        "user_n_ratings": np.array([len(trainset.ur[u]) for u in range(n_users)], dtype=np.int64),
        "item_n_ratings": np.array([len(trainset.ir[i]) for i in range(n_items)], dtype=np.int64),
        "seen_offsets": offsets,
        "seen_items": seen,
        "n_factors": np.int64(algo.n_factors),
        "n_epochs": np.int64(algo.n_epochs),
        "biased": np.bool_(algo.biased),
        "n_ratings": np.int64(trainset.n_ratings),
        "library": np.array(_surprise_version()),
        "algorithm": np.array("SVD"),
    }
    for name in _FLOAT_PARAMS:
        arrays[name] = np.float64(getattr(algo, name))
    if isinstance(algo.random_state, (int, np.integer)):
        arrays["random_state"] = np.int64(algo.random_state)
    if items is not None:
        arrays["titles"] = np.array(
            [str(items.get(raw, items.get(str(raw), ""))) for raw in raw_items], dtype=str
        )
    # np.savez adds ".npz" to a name without it; keep the path as given.
    with open(path, "wb") as out:
        np.savez(out, **arrays)


def load(path):
    """Read an exported model (by this module or recstream) into a dict of numpy arrays.

    Scalars come back as Python values, ids and titles as lists of str.
    """
    out = {}
    with np.load(path, allow_pickle=False) as npz:
        for name in npz.files:
            value = npz[name]
            if value.shape == ():
                value = value.item()
            elif value.dtype.kind == "U":
                value = value.tolist()
            out[name] = value
    return out

