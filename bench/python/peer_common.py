"""Shared helpers for the recstream Python benchmark peers.

Used by surprise_train.py, peer_notebook.py and peer_vectorized.py:

* loading MovieLens ratings into surprise (recbole ``.inter`` with its typed
  header, or GroupLens ``u.data`` without header - sniffed from line 1);
* loading item titles (recbole ``.item`` or GroupLens ``u.item``);
* training / pickling / unpickling the default ``SVD()`` model;
* cold-start ranking, request parsing and reply formatting shared by both
  streaming peers, so they differ only in how they score and how they use
  Kafka;
* the Kafka consumer/producer configuration and the run-statistics line.

Conventions shared by both peers (and meant to be mirrored by the Rust side):

* raw ids are strings (as surprise's file reader produces them); a request's
  ``uid`` may be a JSON number or string and is normalised with ``str()``;
* ranking is by score descending, ties broken by raw item id ascending
  (numerically when the id is an integer string);
* scores are surprise's estimate clipped to the rating scale (1..5).
"""

from __future__ import annotations

import json
import os
import sys
import time

RATING_SCALE = (1, 5)
MODEL_VERSION = "surprise-svd"
# Cold start: items with at least this many ratings, ranked by mean rating.
COLD_START_MIN_RATINGS = 50

RECBOLE_INTER_HEADER_PREFIX = "user_id:"
RECBOLE_ITEM_HEADER_PREFIX = "item_id:"


def log(*args) -> None:
    """Diagnostics go to stderr; stdout carries only the final JSON line."""
    print(*args, file=sys.stderr, flush=True)


def process_seconds() -> float | None:
    """Wall seconds since this process (the interpreter) started, from /proc.

    Resolution is one clock tick (usually 10 ms). None where /proc is absent.
    """
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        # Field 22 (starttime, in clock ticks since boot); skip "(comm)" safely.
        start_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return round(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 3)
    except (OSError, ValueError, IndexError):
        return None


# --------------------------------------------------------------------------
# Data loading
# --------------------------------------------------------------------------

def sniff_ratings_format(path: str) -> str:
    """Return "recbole" for a .inter file with typed header, else "udata"."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
    if first.startswith(RECBOLE_INTER_HEADER_PREFIX):
        return "recbole"
    fields = first.rstrip("\r\n").split("\t")
    if len(fields) != 4:
        raise ValueError(
            f"{path}: expected 4 tab-separated columns (user item rating timestamp), "
            f"got {len(fields)} in line 1")
    return "udata"


def load_ratings(path: str):
    """Load a ratings file into a surprise Dataset (rating scale 1..5).

    Both supported formats are tab-separated ``user item rating timestamp``;
    the recbole one has one header line to skip.
    """
    from surprise import Dataset, Reader

    fmt = sniff_ratings_format(path)
    reader = Reader(line_format="user item rating timestamp", sep="\t",
                    skip_lines=1 if fmt == "recbole" else 0,
                    rating_scale=RATING_SCALE)
    return Dataset.load_from_file(path, reader=reader)


def default_items_path(ratings_path: str) -> str | None:
    """Guess the titles file next to a ratings file (X.inter -> X.item, u.data -> u.item)."""
    d, base = os.path.split(ratings_path)
    candidates = []
    if base.endswith(".inter"):
        candidates.append(os.path.join(d, base[: -len(".inter")] + ".item"))
    candidates.append(os.path.join(d, "u.item"))
    for c in candidates:
        if os.path.exists(c):
            return c
    return None


def load_titles(path: str | None) -> dict[str, str]:
    """Map raw item id -> display title.

    recbole .item (tab, header ``item_id:token movie_title:token_seq
    release_year:token ...``): title = movie_title + " (" + release_year + ")"
    when release_year is non-empty, else movie_title.
    GroupLens u.item (``|``-separated, latin-1): the title column already
    carries the year.
    """
    titles: dict[str, str] = {}
    if not path:
        return titles
    with open(path, "rb") as f:
        first = f.readline()
    if first.startswith(RECBOLE_ITEM_HEADER_PREFIX.encode()):
        with open(path, encoding="utf-8") as f:
            header = f.readline().rstrip("\r\n").split("\t")
            cols = [h.split(":", 1)[0] for h in header]
            i_id, i_title = cols.index("item_id"), cols.index("movie_title")
            i_year = cols.index("release_year") if "release_year" in cols else None
            for line in f:
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) <= max(i_id, i_title):
                    continue
                title = fields[i_title]
                year = fields[i_year] if i_year is not None and i_year < len(fields) else ""
                titles[fields[i_id]] = f"{title} ({year})" if year else title
    else:
        with open(path, encoding="latin-1") as f:
            for line in f:
                fields = line.rstrip("\r\n").split("|")
                if len(fields) >= 2:
                    titles[fields[0]] = fields[1]
    return titles


def json_iid(raw_iid: str):
    """Item id as it appears in replies: int when the raw id is an integer string."""
    try:
        return int(raw_iid)
    except ValueError:
        return raw_iid


def raw_id_sort_key(raw: str):
    """Tie-break order for raw ids: integers numerically, before non-integers."""
    try:
        return (0, int(raw), "")
    except ValueError:
        return (1, 0, raw)


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------

def train_svd(ratings_path: str, seed: int | None):
    """Train surprise's default SVD() on the full ratings file.

    Returns (algo, timings) where algo.trainset is the full trainset.
    """
    from surprise import SVD

    t0 = time.perf_counter()
    data = load_ratings(ratings_path)
    t1 = time.perf_counter()
    trainset = data.build_full_trainset()
    t2 = time.perf_counter()
    algo = SVD(random_state=seed)
    algo.fit(trainset)
    t3 = time.perf_counter()
    return algo, {"load_seconds": round(t1 - t0, 4),
                  "build_trainset_seconds": round(t2 - t1, 4),
                  "fit_seconds": round(t3 - t2, 4)}


def save_model(path: str, algo) -> None:
    """Pickle a fitted algo (with its trainset) via surprise.dump."""
    from surprise import dump
    dump.dump(path, algo=algo)


def load_model(path: str):
    """Load a model written by save_model (surprise.dump format)."""
    from surprise import dump
    _, algo = dump.load(path)
    if algo is None or getattr(algo, "trainset", None) is None:
        raise ValueError(f"{path}: no fitted algo with a trainset in this dump")
    return algo


def model_from_args(args):
    """Train (or load with --model) the SVD model; optionally --save-model it."""
    if args.model:
        t0 = time.perf_counter()
        algo = load_model(args.model)
        timings = {"model_load_seconds": round(time.perf_counter() - t0, 4)}
    else:
        if not args.ratings:
            raise SystemExit("either --ratings or --model is required")
        algo, timings = train_svd(args.ratings, args.seed)
    if args.save_model:
        save_model(args.save_model, algo)
    return algo, timings


def cold_start_ranking(trainset, min_ratings: int = COLD_START_MIN_RATINGS):
    """All items as [(raw_iid, mean_rating)], best cold-start picks first.

    Items with >= min_ratings ratings come first, by mean rating descending;
    the rest follow (only relevant if fewer than n items qualify), also by
    mean. Ties: raw id ascending.
    """
    rows = []
    for inner_iid, ratings in trainset.ir.items():
        raw = trainset.to_raw_iid(inner_iid)
        mean = sum(r for _, r in ratings) / len(ratings)
        rows.append((len(ratings) < min_ratings, -mean, raw_id_sort_key(raw), raw, mean))
    rows.sort()
    return [(raw, mean) for *_, raw, mean in rows]


# --------------------------------------------------------------------------
# Requests and replies
# --------------------------------------------------------------------------

class BadRequest(ValueError):
    pass


def parse_request(value: bytes | None, default_n: int):
    """Decode one input message -> (uid_json, uid_raw, n, request_id).

    ``{"uid": 196}`` or ``{"uid": "196", "n": 5, "request_id": "r1"}``.
    Raises BadRequest (with whatever uid/request_id could be read) otherwise.
    """
    try:
        msg = json.loads(value) if value else None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"invalid JSON: {e}") from None
    if not isinstance(msg, dict):
        raise BadRequest("request is not a JSON object")
    uid = msg.get("uid")
    request_id = msg.get("request_id")
    if isinstance(uid, bool) or not isinstance(uid, (int, str)) or uid == "":
        err = BadRequest("missing or invalid uid (expected integer or string)")
        err.request_id = request_id
        raise err
    n = msg.get("n", default_n)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        err = BadRequest("invalid n (expected non-negative integer)")
        err.uid, err.request_id = uid, request_id
        raise err
    return uid, str(uid).strip(), n, request_id


def reply_json(uid, request_id, recs, titles, cold_start: bool) -> bytes:
    """Serialise a reply; recs is [(raw_iid, score)] already in rank order."""
    return json.dumps({
        "uid": uid,
        "request_id": request_id,
        "recommendations": [
            {"iid": json_iid(iid), "title": titles.get(iid), "score": round(float(s), 4)}
            for iid, s in recs],
        "model_version": MODEL_VERSION,
        "cold_start": cold_start,
    }, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def error_json(err: BadRequest) -> bytes:
    """Reply for an unusable request, so every input gets exactly one output."""
    return json.dumps({
        "uid": getattr(err, "uid", None),
        "request_id": getattr(err, "request_id", None),
        "recommendations": [],
        "model_version": MODEL_VERSION,
        "cold_start": False,
        "error": str(err),
    }, separators=(",", ":")).encode("utf-8")


def reply_key(uid) -> bytes | None:
    return None if uid is None else str(uid).encode("utf-8")


# --------------------------------------------------------------------------
# CLI and Kafka plumbing
# --------------------------------------------------------------------------

def add_common_args(p) -> None:
    """Arguments shared by both streaming peers."""
    p.add_argument("--ratings", help="ratings file (recbole .inter or GroupLens u.data)")
    p.add_argument("--items", help="titles file (recbole .item or GroupLens u.item); "
                   "default: guessed next to --ratings")
    p.add_argument("--model", help="load a pickled model (from --save-model) instead of training")
    p.add_argument("--save-model", help="pickle the trained model to this path")
    p.add_argument("--seed", type=int, default=0, help="SVD random_state (default 0)")
    p.add_argument("--brokers", default="localhost:9092", help="bootstrap servers HOST:PORT")
    p.add_argument("--input-topic", default="quickstart-events")
    p.add_argument("--output-topic", default="recommendation-events")
    p.add_argument("--group-id", default="recstream-python-peer")
    p.add_argument("-n", type=int, default=10, help="default top-n per request")
    p.add_argument("--max-messages", type=int, default=None,
                   help="exit after this many input messages")
    p.add_argument("--idle-exit-seconds", type=float, default=None,
                   help="exit after this long without input (counted from loop start)")
    p.add_argument("--self-test", metavar="UID", action="append",
                   help="no Kafka: score this uid (repeatable), print replies and "
                        "timings as JSON, exit")


def resolve_titles(args, trainset):
    path = args.items or (default_items_path(args.ratings) if args.ratings else None)
    titles = load_titles(path)
    if not titles:
        log("warning: no titles file found; replies carry title null")
    return titles


def consumer_config(args) -> dict:
    # enable.auto.commit is left at librdkafka's default (true): offsets of
    # consumed messages are committed in the background every
    # auto.commit.interval.ms (5 s) and on close(). Messages in flight at a
    # crash may therefore be re-processed (at-least-once) - fine for a peer.
    return {
        "bootstrap.servers": args.brokers,
        "group.id": args.group_id,
        "session.timeout.ms": 6000,
        "auto.offset.reset": "earliest",
    }


def producer_config(args) -> dict:
    return {"bootstrap.servers": args.brokers}


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    t = os.times()
    return t.user + t.system


class Stats:
    """Counters and timings for the final JSON summary line."""

    def __init__(self, peer: str):
        self.peer = peer
        self.messages = 0
        self.errors = 0
        self.cold_start = 0
        self.delivery_errors = 0
        self.first_msg_at: float | None = None
        self.first_msg_cpu: float | None = None
        self.loop_started_at = time.perf_counter()
        self.score_seconds: list[float] = []

    def first_message(self, now: float) -> None:
        """Marks the first message: rates and CPU per message count from here."""
        if self.first_msg_at is None:
            self.first_msg_at = now
            self.first_msg_cpu = cpu_seconds()

    def on_delivery(self, err, _msg) -> None:
        if err is not None:
            self.delivery_errors += 1

    def summary(self, extra: dict) -> dict:
        end = time.perf_counter()
        elapsed = end - self.first_msg_at if self.first_msg_at is not None else 0.0
        lat = sorted(self.score_seconds)

        def pct(p):
            return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1e3, 4) if lat else None

        out = {
            "peer": self.peer,
            "messages": self.messages,
            "errors": self.errors,
            "cold_start": self.cold_start,
            "delivery_errors": self.delivery_errors,
            # first message received -> last reply flushed
            "elapsed_seconds": round(elapsed, 4),
            "rate_per_second": round(self.messages / elapsed, 2) if elapsed > 0 else None,
            "loop_seconds": round(end - self.loop_started_at, 4),
            "score_ms_p50": pct(0.50),
            "score_ms_p99": pct(0.99),
            "process_seconds": process_seconds(),
            # process user+sys CPU from the first message to the summary,
            # per message: comparable with recstream's whole-process figure
            "cpu_us_per_message": round((cpu_seconds() - self.first_msg_cpu) * 1e6 / self.messages, 2)
            if self.first_msg_cpu is not None and self.messages else None,
        }
        out.update(extra)
        return out


def self_test(rec, uids, n):
    """--self-test: score uids one at a time without Kafka.

    rec is either peer's recommender (recommend(uid_raw, n) + titles).
    Returns [{"seconds": scoring time, "reply": reply object}].
    """
    out = []
    for uid in uids:
        uid_json = json_iid(uid)  # "196" -> 196, as a client would send it
        t0 = time.perf_counter()
        recs, cold = rec.recommend(str(uid), n)
        dt = time.perf_counter() - t0
        out.append({"seconds": round(dt, 6),
                    "reply": json.loads(reply_json(uid_json, None, recs, rec.titles, cold))})
    return out


def install_stop_handlers():
    """SIGINT/SIGTERM set a flag so the loop exits cleanly (close + flush + summary)."""
    import signal

    state = {"stop": False}

    def handler(_sig, _frm):
        state["stop"] = True

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return state
