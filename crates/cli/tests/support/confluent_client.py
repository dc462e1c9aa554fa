"""An outside client of `recstream run`'s embedded broker: confluent-kafka.

confluent-kafka bundles its own build of librdkafka, a different version from
the one recstream links, so it asks for its own API versions. Run by
crates/cli/tests/run.rs as

    python confluent_client.py BROKER N

it lists the topics, produces N requests with an idempotent producer,
reads their replies in a consumer group (subscribe, so the group
coordinator assigns the partitions), commits synchronously and reads the
commit back, then prints one JSON line of what it saw. Any client error
raises, which exits non-zero.
"""

import json
import sys
import time

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka.admin import AdminClient

IN_TOPIC, OUT_TOPIC = "quickstart-events", "recommendation-events"


def main():
    broker, n = sys.argv[1], int(sys.argv[2])
    metadata = AdminClient({"bootstrap.servers": broker}).list_topics(timeout=10)
    topics = {name: len(t.partitions) for name, t in metadata.topics.items()}

    errors = []
    producer = Producer({"bootstrap.servers": broker, "enable.idempotence": True})
    for i in range(n):
        request = {"uid": 1 + i % 50, "request_id": f"py-{i}"}
        producer.produce(
            IN_TOPIC,
            key=str(request["uid"]),
            value=json.dumps(request),
            on_delivery=lambda err, _msg: err and errors.append(str(err)),
        )
    if producer.flush(30) != 0 or errors:
        raise KafkaException(f"requests not delivered: {errors or 'flush timed out'}")

    consumer = Consumer(
        {
            "bootstrap.servers": broker,
            "group.id": "confluent-client",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([OUT_TOPIC])
    answered, deadline = {}, time.monotonic() + 60
    while len(answered) < n and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None:
            continue
        if message.error():
            raise KafkaException(message.error())
        reply = json.loads(message.value())
        request_id = reply.get("request_id", "")
        if request_id.startswith("py-"):
            answered[request_id] = len(reply.get("recommendations", []))
    assignment = consumer.assignment()
    consumer.commit(asynchronous=False)
    committed = consumer.committed(assignment, timeout=10)
    consumer.close()
    print(
        json.dumps(
            {
                "topics": topics,
                "answered": len(answered),
                "full_replies": sum(1 for k in answered.values() if k == 10),
                "assigned": len(assignment),
                "committed": sum(1 for tp in committed if tp.offset >= 0),
            }
        )
    )


if __name__ == "__main__":
    main()
