//! The worker against librdkafka's in-process mock cluster: fast end-to-end
//! tests of the delivery guarantees, including broker faults.
//!
//! Each test starts its own cluster (a real Kafka protocol server on a
//! loopback port), runs a worker in the same process, and checks the exact
//! outcome on the output topics and the committed offsets.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Message, Offset, TopicPartitionList};
use recstream_core::synth::{SyntheticSpec, generate};
use recstream_core::{FitConfig, Hyperparams, Model, Recommender};
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::metrics::Health;
use recstream_stream::serving::ServingModel;
use recstream_stream::worker::{self, WorkerConfig, WorkerSummary};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

const IN: &str = "requests";
const OUT: &str = "replies";
const DLQ: &str = "dead-letters";

fn model() -> Arc<ServingModel> {
    let data = generate(&SyntheticSpec {
        users: 200,
        items: 300,
        ratings: 8000,
        seed: 1,
    });
    let config = FitConfig {
        params: Hyperparams {
            n_factors: 8,
            n_epochs: 5,
            ..Hyperparams::with_seed(2)
        },
        threads: 1,
        scale: None,
        titles: None,
        source: "synthetic".into(),
    };
    let mut model = Model::fit(&data, &config, &mut |_| {}).unwrap();
    model.id = "test-model".into();
    ServingModel::new(Recommender::new(model))
}

fn cluster() -> MockCluster<'static, rdkafka::producer::DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for topic in [IN, OUT, DLQ] {
        cluster.create_topic(topic, 4, 1).unwrap();
    }
    cluster
}

fn settings(
    cluster: &MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
) -> KafkaSettings {
    KafkaSettings::new(cluster.bootstrap_servers())
        .with("session.timeout.ms", "6000")
        .with("heartbeat.interval.ms", "500")
        .with("message.timeout.ms", "5000")
}

fn config(settings: &KafkaSettings, group: &str) -> WorkerConfig {
    WorkerConfig {
        input_topic: IN.into(),
        output_topic: OUT.into(),
        dlq_topic: DLQ.into(),
        group_id: group.into(),
        drain_timeout: Duration::from_secs(10),
        ..WorkerConfig::new(settings.clone())
    }
}

/// A worker running on the test's runtime.
struct RunningWorker {
    shutdown: CancellationToken,
    health: Arc<Health>,
    task: tokio::task::JoinHandle<Result<WorkerSummary, worker::WorkerError>>,
}

fn start_worker(config: WorkerConfig, model: Arc<ServingModel>) -> RunningWorker {
    let shutdown = CancellationToken::new();
    let health = Arc::new(Health::default());
    let task = tokio::spawn(worker::run(
        config.check().expect("valid settings"),
        model,
        health.clone(),
        shutdown.clone(),
    ));
    RunningWorker {
        shutdown,
        health,
        task,
    }
}

impl RunningWorker {
    async fn stop(self) -> WorkerSummary {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("stops in time")
            .unwrap()
            .unwrap()
    }
}

async fn produce(settings: &KafkaSettings, topic: &str, messages: &[Vec<u8>]) {
    let producer: FutureProducer = settings.producer().create().unwrap();
    let keys: Vec<String> = (0..messages.len()).map(|i| (i % 97).to_string()).collect();
    let mut pending = Vec::new();
    for (payload, key) in messages.iter().zip(&keys) {
        let record = FutureRecord::to(topic).key(key).payload(payload);
        pending.push(producer.send(record, Duration::from_secs(30)));
    }
    for result in futures::future::join_all(pending).await {
        result.expect("request delivered");
    }
}

fn requests(prefix: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            format!(
                r#"{{"uid": {}, "request_id": "{prefix}-{i}"}}"#,
                1 + i % 250
            )
            .into_bytes()
        })
        .collect()
}

/// Reads a topic from the beginning until it holds `expected` distinct
/// request ids (duplicates allowed), or until the timeout.
fn read_all(
    settings: &KafkaSettings,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Vec<Value> {
    let consumer: BaseConsumer = settings.reader("reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + timeout;
    let mut out: Vec<Value> = Vec::new();
    let mut distinct = std::collections::HashSet::new();
    while distinct.len() < expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value: Value =
                serde_json::from_slice(message.payload().unwrap_or_default()).unwrap();
            // Dead letters have no request id: count each one.
            let id = value["request_id"].as_str().map_or_else(
                || format!("{}@{}", value["offset"], value["partition"]),
                str::to_string,
            );
            distinct.insert(id);
            out.push(value);
        }
    }
    out
}

/// How many replies each request id got.
fn count_by_request(replies: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        *counts
            .entry(reply["request_id"].as_str().unwrap_or_default().to_string())
            .or_default() += 1;
    }
    counts
}

/// Committed offsets of `group` on the input topic, and the end of each partition.
fn committed_and_end(settings: &KafkaSettings, group: &str) -> Vec<(i64, i64)> {
    let consumer: StreamConsumer = settings.reader(group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..4 {
        tpl.add_partition(IN, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    (0..4)
        .map(|p| {
            let offset = match committed.find_partition(IN, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            let (_, high) = consumer
                .fetch_watermarks(IN, p, Duration::from_secs(5))
                .unwrap();
            (offset, high)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_exactly_one_reply_and_every_offset_is_committed() {
    let cluster = cluster();
    let settings = settings(&cluster);
    produce(&settings, IN, &requests("a", 2000)).await;
    let worker = start_worker(config(&settings, "g1"), model());
    let replies = read_all(&settings, OUT, 2000, Duration::from_secs(60));
    let summary = worker.stop().await;

    let counts = count_by_request(&replies);
    assert_eq!(counts.len(), 2000, "every request answered");
    assert!(
        counts.values().all(|&c| c == 1),
        "no duplicates without a crash"
    );
    for reply in &replies {
        let recs = reply["recommendations"].as_array().unwrap();
        assert!(!recs.is_empty());
        assert_eq!(reply["model_version"], "test-model");
        let scores: Vec<f64> = recs.iter().map(|r| r["score"].as_f64().unwrap()).collect();
        assert!(scores.windows(2).all(|w| w[0] >= w[1]));
    }
    assert_eq!(
        (
            summary.consumed,
            summary.replies,
            summary.dead_letters,
            summary.abandoned
        ),
        (2000, 2000, 0, 0)
    );
    for (committed, end) in committed_and_end(&settings, "g1") {
        assert_eq!(committed, end, "graceful shutdown commits everything");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_are_dead_lettered_and_the_worker_keeps_answering() {
    let cluster = cluster();
    let settings = settings(&cluster);
    let mut messages = requests("b", 500);
    let bad: Vec<Vec<u8>> = vec![
        b"not json".to_vec(),
        b"\xff\xfe\x00binary".to_vec(),
        br#"{"user": 1}"#.to_vec(),
        br#"{"uid": 1.5}"#.to_vec(),
        br#"{"uid": 1, "n": 0}"#.to_vec(),
        br#"[1, 2]"#.to_vec(),
        format!(r#"{{"uid": 1, "pad": "{}"}}"#, "x".repeat(70_000)).into_bytes(),
        Vec::new(),
    ];
    for i in 0..200 {
        messages.insert(i * 3, bad[i % bad.len()].clone());
    }
    produce(&settings, IN, &messages).await;
    let worker = start_worker(config(&settings, "g2"), model());
    let replies = read_all(&settings, OUT, 500, Duration::from_secs(60));
    let letters = read_all(&settings, DLQ, 200, Duration::from_secs(30));
    let summary = worker.stop().await;

    assert_eq!(count_by_request(&replies).len(), 500);
    assert_eq!(letters.len(), 200);
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for letter in &letters {
        *reasons
            .entry(letter["reason"].as_str().unwrap().to_string())
            .or_default() += 1;
        assert_eq!(letter["topic"], IN);
        assert!(letter["offset"].as_i64().unwrap() >= 0);
    }
    for reason in [
        "invalid_json",
        "not_utf8",
        "missing_uid",
        "invalid_uid",
        "invalid_n",
        "not_an_object",
        "too_large",
        "empty",
    ] {
        assert_eq!(reasons.get(reason), Some(&25), "{reason}: {reasons:?}");
    }
    assert_eq!((summary.replies, summary.dead_letters), (500, 200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_in_the_middle_of_the_stream_loses_no_request() {
    let cluster = cluster();
    let settings = settings(&cluster);
    produce(&settings, IN, &requests("c", 1000)).await;
    let worker = start_worker(config(&settings, "g3"), model());
    let first = read_all(&settings, OUT, 1000, Duration::from_secs(60));
    assert_eq!(count_by_request(&first).len(), 1000);

    cluster.broker_down(-1).unwrap();
    // While the broker is away the worker keeps retrying; it must not give up or crash.
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.broker_up(-1).unwrap();
    produce(&settings, IN, &requests("d", 1000)).await;
    let all = read_all(&settings, OUT, 2000, Duration::from_secs(90));
    let summary = worker.stop().await;

    let counts = count_by_request(&all);
    assert_eq!(
        counts.len(),
        2000,
        "every request answered after the outage"
    );
    assert!(counts.values().all(|&c| c >= 1));
    assert!(summary.replies >= 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_produce_requests_are_retried_until_delivered() {
    let cluster = cluster();
    let settings = settings(&cluster);
    produce(&settings, IN, &requests("e", 300)).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 20],
    );
    let worker = start_worker(config(&settings, "g4"), model());
    let replies = read_all(&settings, OUT, 300, Duration::from_secs(60));
    let summary = worker.stop().await;
    assert_eq!(count_by_request(&replies).len(), 300);
    assert_eq!(summary.replies, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_graceful_stop_a_restarted_worker_has_nothing_to_redo() {
    let cluster = cluster();
    let settings = settings(&cluster);
    produce(&settings, IN, &requests("f", 400)).await;
    let worker = start_worker(config(&settings, "g5"), model());
    read_all(&settings, OUT, 400, Duration::from_secs(60));
    let started = Instant::now();
    let first = worker.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(first.replies, 400);

    let again = start_worker(config(&settings, "g5"), model());
    // The premise: it joined the group and consumes. Then one new request
    // is all it reads: nothing old was left uncommitted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !again.health.is_ready() {
        assert!(
            Instant::now() < deadline,
            "the restarted worker joined the group"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    produce(&settings, IN, &requests("f-after", 1)).await;
    let replies = read_all(&settings, OUT, 401, Duration::from_secs(30));
    assert!(
        count_by_request(&replies).contains_key("f-after-0"),
        "it consumes"
    );
    let second = again.stop().await;
    assert_eq!(second.consumed, 1, "nothing was left uncommitted");
}

#[test]
fn a_worker_with_no_broker_waits_and_stops_cleanly() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // Port 9 on loopback: nothing listens, connections are refused.
        let settings = KafkaSettings::new("127.0.0.1:9").with("session.timeout.ms", "6000");
        let worker = start_worker(config(&settings, "g6"), model());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let summary = worker.stop().await;
        assert_eq!(summary, WorkerSummary::default());
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_mode_answers_every_request_once_through_transactions() {
    // The mock cluster accepts the transaction calls (it does not persist
    // transactional offsets), so this covers the code path, not recovery;
    // recovery after kill -9 needs a broker with real transactions.
    let cluster = cluster();
    let settings = settings(&cluster);
    let mut messages = requests("x", 1500);
    messages.insert(700, b"not json".to_vec());
    produce(&settings, IN, &messages).await;
    let config = WorkerConfig {
        exactly_once: true,
        transactional_id: "recstream-test-eos".into(),
        ..config(&settings, "g7")
    };
    let worker = start_worker(config, model());
    let replies = read_all(&settings, OUT, 1500, Duration::from_secs(60));
    let letters = read_all(&settings, DLQ, 1, Duration::from_secs(30));
    let summary = worker.stop().await;
    let counts = count_by_request(&replies);
    assert_eq!(counts.len(), 1500);
    assert!(counts.values().all(|&c| c == 1));
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (summary.consumed, summary.replies, summary.dead_letters),
        (1501, 1500, 1)
    );
}

/// Regression: `bench replies` started before the worker had written its
/// first reply assigned itself zero partitions of the not-yet-existing
/// topic and reported 0 replies however many followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_rate_waits_for_a_reply_topic_created_after_it_started() {
    let cluster = cluster();
    let settings = settings(&cluster);
    let reader = {
        let settings = settings.clone();
        tokio::spawn(async move {
            recstream_bench::reply_rate::run(
                &settings,
                "late-replies",
                300,
                Duration::from_secs(20),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.create_topic("late-replies", 2, 1).unwrap();
    produce(&settings, "late-replies", &requests("late", 300)).await;
    let stats = reader.await.unwrap().unwrap();
    assert_eq!((stats.replies, stats.distinct_requests), (300, 300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_gets_a_truncated_dead_letter_and_its_partition_keeps_committing() {
    let cluster = cluster();
    let settings = settings(&cluster);
    // Control characters JSON escapes six-fold, and bytes that are not UTF-8
    // (base64): whole, either dead letter is over the producer's 1 MB limit.
    let big = [vec![1u8; 200_000], vec![0xffu8; 800_000]];
    let mut messages: Vec<Vec<u8>> = big.to_vec();
    messages.extend(requests("big", 400));
    produce(&settings, IN, &messages).await;
    let worker = start_worker(config(&settings, "g8"), model());
    let replies = read_all(&settings, OUT, 400, Duration::from_secs(60));
    let letters = read_all(&settings, DLQ, 2, Duration::from_secs(30));
    let summary = worker.stop().await;
    assert_eq!(count_by_request(&replies).len(), 400);
    assert_eq!(letters.len(), 2, "both oversized requests dead-lettered");
    for letter in &letters {
        assert_eq!(letter["reason"], "too_large");
        assert_eq!(letter["truncated"], true);
        assert!(letter["payload_bytes"].as_u64().unwrap() >= 200_000);
    }
    assert_eq!((summary.dead_letters, summary.undeliverable), (2, 0));
    for (committed, end) in committed_and_end(&settings, "g8") {
        assert_eq!(
            committed, end,
            "no partition stalls behind an oversized request"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_that_can_never_succeed_stops_the_worker_loudly_and_loses_nothing() {
    let cluster = cluster();
    let settings = settings(&cluster);
    produce(&settings, IN, &requests("auth", 200)).await;
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 50],
    );
    let worker = start_worker(config(&settings, "g9"), model());
    // It stops by itself, with the topic and the cause, instead of retrying forever.
    let stopped = tokio::time::timeout(Duration::from_secs(60), worker.task)
        .await
        .expect("the worker stops by itself")
        .unwrap();
    let error = stopped.expect_err("a permanent error is an error");
    let text = error.to_string();
    assert!(text.contains(OUT) || text.contains(DLQ), "{text}");
    assert!(text.contains("not authorized"), "{text}");
    let uncommitted: i64 = committed_and_end(&settings, "g9")
        .into_iter()
        .map(|(committed, end)| end - committed.max(0))
        .sum();
    assert!(
        uncommitted > 0,
        "the premise: requests were left uncommitted"
    );
    // Once the cause is gone, a restarted worker answers every request.
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let again = start_worker(config(&settings, "g9"), model());
    let replies = read_all(&settings, OUT, 200, Duration::from_secs(60));
    again.stop().await;
    assert_eq!(count_by_request(&replies).len(), 200, "nothing lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_rating_is_dead_lettered_and_the_learner_goes_on_learning() {
    use recstream_stream::learner::{self, LearnerConfig};
    let cluster = cluster();
    // One partition each: the model and item-deltas topics are partitioned
    // like the ratings, and the huge rating and the next share a partition.
    for topic in [
        "ratings",
        "ratings-dlq",
        "model-updates",
        "item-deltas",
        "model-files",
    ] {
        cluster.create_topic(topic, 1, 1).unwrap();
    }
    let settings = settings(&cluster).with("message.max.bytes", "2000000");
    // 1.2 MB of control characters: its dead letter, whole and escaped,
    // would be 7 MB, over the learner's 4 MiB producer limit.
    let huge = vec![1u8; 1_200_000];
    let rating = br#"{"uid": 1, "iid": 2, "rating": 4}"#.to_vec();
    let producer: FutureProducer = settings.producer().create().unwrap();
    for payload in [&huge, &rating] {
        // Same key, same partition: the valid rating comes after the huge one.
        producer
            .send(
                FutureRecord::to("ratings").key("k").payload(payload),
                Duration::from_secs(30),
            )
            .await
            .expect("rating delivered");
    }
    let shutdown = CancellationToken::new();
    let config = LearnerConfig {
        ratings_topic: "ratings".into(),
        model_topic: "model-updates".into(),
        dlq_topic: "ratings-dlq".into(),
        ..LearnerConfig::new(settings.clone())
    };
    let initial = model().current();
    let initial = recstream_stream::serving::read(&initial).model().clone();
    let task = tokio::spawn(learner::run(
        config.check().expect("valid settings"),
        initial,
        shutdown.clone(),
    ));
    let letters = read_all(&settings, "ratings-dlq", 1, Duration::from_secs(30));
    assert_eq!(letters.len(), 1, "the huge rating was dead-lettered");
    assert_eq!(letters[0]["truncated"], true);
    // The rating after it is learnt: its user state reaches the model topic.
    let deadline = Instant::now() + Duration::from_secs(30);
    let consumer: BaseConsumer = settings.reader("model-reader").create().unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("model-updates", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let mut learnt = false;
    while !learnt && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            learnt = message.key() == Some(b"user:1".as_slice());
        }
    }
    assert!(learnt, "the rating after the huge one was learnt");
    shutdown.cancel();
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the learner stops on request")
        .unwrap()
        .unwrap();
    assert_eq!((summary.learnt, summary.dead_letters), (1, 1));
}
