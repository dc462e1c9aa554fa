#!/usr/bin/env python3
"""Notebook-style Python streaming peer: the reference design recstream replaces.

Trains surprise's default ``SVD(random_state=--seed)`` on the full ratings
file at start (or loads one pickled with --save-model via --model), then runs
a confluent-kafka consumer loop that handles ONE request at a time, the way
the original notebook did: for every item the user has not rated it calls
``algo.predict(uid, iid)`` and sorts all the predictions.

Input  (--input-topic):  {"uid": 196}  [optional "n", "request_id"]
Output (--output-topic, key = uid):
    {"uid": 196, "request_id": null,
     "recommendations": [{"iid": 1449, "title": "...", "score": 4.71}, ...],
     "model_version": "surprise-svd", "cold_start": false}

Unknown users get cold_start true and the best-rated items among those with
>= 50 ratings. Offsets are committed by librdkafka's auto-commit (default
enable.auto.commit=true, every 5 s and on close). On exit (--max-messages,
--idle-exit-seconds, SIGINT/SIGTERM) one JSON summary line goes to stdout.

    python peer_notebook.py --ratings ml-100k.inter --brokers localhost:9092 \\
        --group-id py-nb -n 10 --max-messages 1000 --idle-exit-seconds 30
    python peer_notebook.py --ratings ml-100k.inter --self-test 196   # no Kafka
"""

import argparse
import json
import time

import peer_common as pc

PEER = "python-notebook"


class NotebookRecommender:
    """Per-item algo.predict() scoring, exactly as a notebook would do it."""

    def __init__(self, algo, titles):
        self.algo = algo
        self.trainset = algo.trainset
        self.titles = titles
        # All raw item ids, in tie-break order (a stable sort on score then
        # keeps equal scores in raw-id order).
        self.all_iids = sorted((self.trainset.to_raw_iid(i) for i in self.trainset.all_items()),
                               key=pc.raw_id_sort_key)
        self.cold = pc.cold_start_ranking(self.trainset)

    def recommend(self, uid_raw: str, n: int):
        """Return (recs [(raw_iid, score)], cold_start)."""
        ts = self.trainset
        try:
            inner_uid = ts.to_inner_uid(uid_raw)
        except ValueError:
            return self.cold[:n], True
        rated = {ts.to_raw_iid(j) for j, _ in ts.ur[inner_uid]}
        # algo.predict clips the estimate to the rating scale (clip=True).
        preds = [self.algo.predict(uid_raw, iid) for iid in self.all_iids if iid not in rated]
        preds.sort(key=lambda p: p.est, reverse=True)
        return [(p.iid, p.est) for p in preds[:n]], False


def handle(rec, stats, value, default_n):
    """One request -> (key, reply bytes)."""
    try:
        uid, uid_raw, n, request_id = pc.parse_request(value, default_n)
    except pc.BadRequest as e:
        stats.errors += 1
        return pc.reply_key(getattr(e, "uid", None)), pc.error_json(e)
    t0 = time.perf_counter()
    recs, cold = rec.recommend(uid_raw, n)
    stats.score_seconds.append(time.perf_counter() - t0)
    stats.cold_start += cold
    return pc.reply_key(uid), pc.reply_json(uid, request_id, recs, rec.titles, cold)


def run_kafka(args, rec, extra):
    from confluent_kafka import Consumer, KafkaError, Producer

    stop = pc.install_stop_handlers()
    consumer = Consumer(pc.consumer_config(args))
    producer = Producer(pc.producer_config(args))
    consumer.subscribe([args.input_topic])
    stats = pc.Stats(PEER)
    last_activity = time.perf_counter()
    pc.log(f"{PEER}: consuming {args.input_topic} from {args.brokers}")
    try:
        while not stop["stop"]:
            if args.max_messages is not None and stats.messages >= args.max_messages:
                break
            msg = consumer.poll(1.0)
            producer.poll(0)  # serve delivery callbacks
            if msg is None:
                if (args.idle_exit_seconds is not None
                        and time.perf_counter() - last_activity >= args.idle_exit_seconds):
                    pc.log(f"{PEER}: idle for {args.idle_exit_seconds}s, exiting")
                    break
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    pc.log(f"{PEER}: consumer error: {msg.error()}")
                continue
            last_activity = time.perf_counter()
            stats.first_message(last_activity)
            key, value = handle(rec, stats, msg.value(), args.n)
            while True:
                try:
                    producer.produce(args.output_topic, key=key, value=value,
                                     on_delivery=stats.on_delivery)
                    break
                except BufferError:  # local queue full: let it drain
                    producer.poll(0.1)
            stats.messages += 1
    finally:
        pc.log(f"{PEER}: flushing producer, closing consumer")
        remaining = producer.flush(30)
        consumer.close()  # commits the final offsets (auto-commit)
    print(json.dumps(stats.summary({**extra, "unflushed": remaining})), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    pc.add_common_args(ap)
    args = ap.parse_args()

    algo, timings = pc.model_from_args(args)
    rec = NotebookRecommender(algo, pc.resolve_titles(args, algo.trainset))
    extra = {"startup": timings, "n_users": algo.trainset.n_users,
             "n_items": algo.trainset.n_items}
    if args.self_test:
        print(json.dumps({"peer": PEER, **extra,
                          "results": pc.self_test(rec, args.self_test, args.n)}))
        return
    run_kafka(args, rec, extra)


if __name__ == "__main__":
    main()
