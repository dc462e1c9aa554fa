#!/usr/bin/env python3
"""Vectorized Python streaming peer: best-effort fast Python for the same job.

Same model, protocol and replies as peer_notebook.py (see there), but:

* scoring reads surprise's learned arrays directly and uses numpy:
  ``scores = global_mean + bu[u] + bi + qi @ pu[u]`` over the whole item-factor
  matrix (one matrix product per consumed batch), clipped to the rating
  scale (as algo.predict does), rated items masked to -inf, np.argpartition
  for the top-n and a sort of just those (ties: raw item id ascending);
* Kafka is batched: ``consumer.consume(num_messages=--batch-size,
  timeout=--batch-timeout)``, replies via ``producer.produce`` with periodic
  ``poll(0)``, one ``flush()`` at the end.

Offsets are committed by librdkafka's auto-commit (default
enable.auto.commit=true, every 5 s and on close). On exit (--max-messages,
--idle-exit-seconds, SIGINT/SIGTERM) one JSON summary line goes to stdout;
score_ms_p50/p99 there are per request, amortised over its batch.

    python peer_vectorized.py --ratings ml-100k.inter --brokers localhost:9092 \\
        --group-id py-vec -n 10 --max-messages 100000 --idle-exit-seconds 30
    python peer_vectorized.py --ratings ml-100k.inter --self-test 196   # no Kafka
"""

import argparse
import json
import time

import numpy as np

import peer_common as pc

PEER = "python-vectorized"


class VectorRecommender:
    """numpy scoring over surprise SVD's factors; items kept in raw-id order."""

    def __init__(self, algo, titles):
        ts = algo.trainset
        self.titles = titles
        self.lo, self.hi = ts.rating_scale
        # Reorder items by raw id so that "lower column index" == tie-break order.
        raw = [ts.to_raw_iid(i) for i in range(ts.n_items)]
        perm = np.array(sorted(range(ts.n_items), key=lambda i: pc.raw_id_sort_key(raw[i])),
                        dtype=np.int64)
        pos_of_inner = np.empty_like(perm)
        pos_of_inner[perm] = np.arange(ts.n_items)
        self.raw_iids = [raw[i] for i in perm]
        self.qi = np.ascontiguousarray(algo.qi[perm])      # (n_items, k)
        self.bi = np.ascontiguousarray(algo.bi[perm])      # (n_items,)
        self.pu, self.bu = algo.pu, algo.bu                # (n_users, k), (n_users,)
        self.global_mean = ts.global_mean
        self.n_items = ts.n_items
        self.uid_index = {ts.to_raw_uid(u): u for u in ts.all_users()}
        # Rated item columns per inner user.
        self.rated = [pos_of_inner[np.fromiter((j for j, _ in ts.ur[u]), dtype=np.int64)]
                      for u in range(ts.n_users)]
        self.cold = pc.cold_start_ranking(ts)

    def _top_n(self, s: np.ndarray, n: int, n_cand: int):
        """Top-n columns of one score row (-inf = excluded), ties by column."""
        k = min(n, n_cand)
        if k <= 0:
            return []
        if k < s.shape[0]:
            part = np.argpartition(s, s.shape[0] - k)[s.shape[0] - k:]
            cand = np.flatnonzero(s >= s[part].min())  # every item tied at the cut
        else:
            cand = np.flatnonzero(np.isfinite(s))
        cand = cand[np.lexsort((cand, -s[cand]))[:k]]
        return [(self.raw_iids[c], s[c]) for c in cand.tolist()]

    def recommend_batch(self, requests):
        """requests: [(uid_raw, n)] -> [(recs [(raw_iid, score)], cold_start)]."""
        inner = [self.uid_index.get(uid_raw) for uid_raw, _ in requests]
        known = [u for u in inner if u is not None]
        if known:
            us = np.array(known, dtype=np.int64)
            # (B, n_items); same summation order as surprise's estimate().
            scores = (self.global_mean + self.bu[us])[:, None] + self.bi[None, :]
            scores += self.pu[us] @ self.qi.T
            np.clip(scores, self.lo, self.hi, out=scores)
        out, row = [], 0
        for (uid_raw, n), u in zip(requests, inner):
            if u is None:
                out.append((self.cold[:n], True))
                continue
            s = scores[row]
            row += 1
            s[self.rated[u]] = -np.inf
            out.append((self._top_n(s, n, self.n_items - len(self.rated[u])), False))
        return out

    def recommend(self, uid_raw: str, n: int):
        return self.recommend_batch([(uid_raw, n)])[0]


def run_kafka(args, rec, extra):
    from confluent_kafka import Consumer, KafkaError, Producer

    stop = pc.install_stop_handlers()
    consumer = Consumer(pc.consumer_config(args))
    producer = Producer(pc.producer_config(args))
    consumer.subscribe([args.input_topic])
    stats = pc.Stats(PEER)
    last_activity = time.perf_counter()
    since_poll = 0

    def produce(key, value):
        nonlocal since_poll
        while True:
            try:
                producer.produce(args.output_topic, key=key, value=value,
                                 on_delivery=stats.on_delivery)
                break
            except BufferError:  # local queue full: serve callbacks, retry
                producer.poll(0.1)
        since_poll += 1
        if since_poll >= 100:
            producer.poll(0)
            since_poll = 0

    pc.log(f"{PEER}: consuming {args.input_topic} from {args.brokers}")
    try:
        while not stop["stop"]:
            want = args.batch_size
            if args.max_messages is not None:
                want = min(want, args.max_messages - stats.messages)
                if want <= 0:
                    break
            msgs = consumer.consume(num_messages=want, timeout=args.batch_timeout)
            producer.poll(0)
            ok = []
            for m in msgs:
                if m.error() is None:
                    ok.append(m)
                elif m.error().code() != KafkaError._PARTITION_EOF:
                    pc.log(f"{PEER}: consumer error: {m.error()}")
            msgs = ok
            if not msgs:
                if (args.idle_exit_seconds is not None
                        and time.perf_counter() - last_activity >= args.idle_exit_seconds):
                    pc.log(f"{PEER}: idle for {args.idle_exit_seconds}s, exiting")
                    break
                continue
            last_activity = time.perf_counter()
            stats.first_message(last_activity)

            parsed, good = [], []
            for m in msgs:
                try:
                    parsed.append(pc.parse_request(m.value(), args.n))
                    good.append(len(parsed) - 1)
                except pc.BadRequest as e:
                    stats.errors += 1
                    parsed.append(e)
            t0 = time.perf_counter()
            results = rec.recommend_batch([(parsed[i][1], parsed[i][2]) for i in good])
            if good:
                per = (time.perf_counter() - t0) / len(good)
                stats.score_seconds.extend([per] * len(good))
            it = iter(results)
            for p in parsed:
                if isinstance(p, pc.BadRequest):
                    produce(pc.reply_key(getattr(p, "uid", None)), pc.error_json(p))
                    continue
                uid, _, _, request_id = p
                recs, cold = next(it)
                stats.cold_start += cold
                produce(pc.reply_key(uid),
                        pc.reply_json(uid, request_id, recs, rec.titles, cold))
            stats.messages += len(msgs)
    finally:
        pc.log(f"{PEER}: flushing producer, closing consumer")
        remaining = producer.flush(30)
        consumer.close()  # commits the final offsets (auto-commit)
    print(json.dumps(stats.summary({**extra, "unflushed": remaining,
                                    "batch_size": args.batch_size})), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    pc.add_common_args(ap)
    ap.add_argument("--batch-size", type=int, default=500,
                    help="consumer.consume num_messages (default 500)")
    ap.add_argument("--batch-timeout", type=float, default=0.1,
                    help="consumer.consume timeout in seconds (default 0.1)")
    args = ap.parse_args()

    algo, timings = pc.model_from_args(args)
    rec = VectorRecommender(algo, pc.resolve_titles(args, algo.trainset))
    extra = {"startup": timings, "n_users": algo.trainset.n_users,
             "n_items": algo.trainset.n_items}
    if args.self_test:
        print(json.dumps({"peer": PEER, **extra,
                          "results": pc.self_test(rec, args.self_test, args.n)}))
        return
    run_kafka(args, rec, extra)


if __name__ == "__main__":
    main()
