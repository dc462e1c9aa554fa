#!/usr/bin/env python3
"""Broker-less end-to-end smoke test of the streaming peers.

Starts librdkafka's in-process mock cluster (``test.mock.num.brokers=1``,
listening on 127.0.0.1 only), produces --messages requests to
quickstart-events (mostly known uids, some unknown uids, some garbage), runs
each selected peer as a subprocess against it with --max-messages, then reads
recommendation-events back and checks: one reply per request, keys match
uids, error/cold-start counts, and that the peer's consumer group committed
every input offset. Prints one JSON line per peer; exit status 1 on failure.

The mock cluster is for functional checks only - its throughput says little
about a real broker's.

    python mock_kafka_smoke.py --ratings ml-100k.inter --peer both --messages 2000
"""

import argparse
import json
import os
import random
import subprocess
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

HERE = os.path.dirname(os.path.abspath(__file__))
IN_TOPIC, OUT_TOPIC = "quickstart-events", "recommendation-events"


def make_requests(count: int, seed: int = 0):
    """Requests with known errors/cold starts mixed in; returns (values, n_bad, n_cold)."""
    rnd = random.Random(seed)
    values, bad, cold = [], 0, 0
    for i in range(count):
        if i % 97 == 5:
            values.append(b"not json")
            bad += 1
        elif i % 50 == 3:
            values.append(json.dumps({"uid": "no-such-user", "request_id": f"r{i}"}).encode())
            cold += 1
        else:
            uid = rnd.randint(1, 943)
            uid = str(uid) if i % 2 else uid  # numbers and strings
            values.append(json.dumps({"uid": uid, "request_id": f"r{i}"}).encode())
    return values, bad, cold


def run_one(peer: str, args) -> dict:
    # A fresh mock cluster per peer, so topics start empty.
    mock = Producer({"test.mock.num.brokers": 1, "log_level": 3})
    broker = next(iter(mock.list_topics(timeout=10).brokers.values()))
    brokers = f"{broker.host}:{broker.port}"

    values, bad, cold = make_requests(args.messages)
    prod = Producer({"bootstrap.servers": brokers})
    for i, v in enumerate(values):
        prod.produce(IN_TOPIC, value=v)
        if i % 1000 == 0:
            prod.poll(0)
    prod.flush(30)

    group = f"smoke-{peer}"
    cmd = [sys.executable, os.path.join(HERE, f"peer_{peer}.py"), "--ratings", args.ratings,
           "--brokers", brokers, "--group-id", group, "-n", "10",
           "--max-messages", str(len(values)), "--idle-exit-seconds", "30"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    try:
        peer_summary = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        peer_summary = None

    replies = []
    cons = Consumer({"bootstrap.servers": brokers, "group.id": "smoke-checker",
                     "auto.offset.reset": "earliest"})
    cons.subscribe([OUT_TOPIC])
    deadline = time.time() + 30
    while len(replies) < len(values) and time.time() < deadline:
        for m in cons.consume(500, 1.0):
            if m.error() is None:
                replies.append((m.key(), json.loads(m.value())))
    cons.close()

    check = Consumer({"bootstrap.servers": brokers, "group.id": group})
    parts = check.list_topics(IN_TOPIC, timeout=10).topics[IN_TOPIC].partitions
    committed = check.committed([TopicPartition(IN_TOPIC, p) for p in parts], timeout=10)
    check.close()
    committed_total = sum(max(tp.offset, 0) for tp in committed)

    keys_ok = all(
        (k is None and r["uid"] is None) or (k is not None and k.decode() == str(r["uid"]))
        for k, r in replies)
    got_bad = sum(1 for _, r in replies if "error" in r)
    got_cold = sum(1 for _, r in replies if r.get("cold_start"))
    full = all(len(r["recommendations"]) == 10 for _, r in replies if "error" not in r)
    ok = (proc.returncode == 0 and len(replies) == len(values) and keys_ok and full
          and got_bad == bad and got_cold == cold and committed_total == len(values))
    result = {"peer": peer, "ok": ok, "sent": len(values), "replies": len(replies),
              "errors": got_bad, "cold_start": got_cold, "keys_ok": keys_ok,
              "all_top10": full, "committed": committed_total,
              "peer_rc": proc.returncode, "peer_summary": peer_summary}
    if not ok:
        result["peer_stderr_tail"] = proc.stderr[-2000:]
    del mock
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ratings", required=True, help="ratings file for the peers")
    ap.add_argument("--peer", choices=["notebook", "vectorized", "both"], default="both")
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=600, help="per-peer subprocess timeout")
    args = ap.parse_args()

    peers = ["notebook", "vectorized"] if args.peer == "both" else [args.peer]
    all_ok = True
    for peer in peers:
        res = run_one(peer, args)
        all_ok &= res["ok"]
        print(json.dumps(res), flush=True)
    sys.exit(0 if all_ok else 1)


if __name__ == "__main__":
    main()
