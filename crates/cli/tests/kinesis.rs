//! `recstream serve`, `produce` and `consume` on Kinesis streams, as a user
//! runs them: the real binary against kinesis-local, with no Kafka at all.
//! A worker killed with SIGKILL while answering is restarted on its
//! checkpoint file: every request is answered, and the only requests
//! answered twice are those after the checkpoint the killed worker left.
//! Start-up mistakes are clear errors before anything is read.

#![cfg(feature = "kinesis")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../kinesis/tests/support/mod.rs"]
mod kinesis_support;
mod support;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kinesis_support::KinesisLocal;
use recstream_kinesis::aws_sdk_kinesis::Client;
use recstream_kinesis::lineage::FirstStart;
use recstream_stream::tools::ConsumeLimits;
use serde_json::Value;
use support::{Worker, http_get, metric, recstream_binary, run_to_end, wait_ready};

const REQUESTS: &str = "requests";
const REPLIES: &str = "replies";
const DEAD_LETTERS: &str = "dead-letters";
const COUNT: usize = 4_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// `recstream serve` on the three streams, with no Kafka.
fn start_worker(endpoint: &str, model: &Path, dir: &Path, name: &str) -> Worker {
    let mut command = Command::new(recstream_binary());
    command
        .args([
            "serve",
            "--no-follow",
            "--create-topics",
            "--partitions",
            "2",
        ])
        .args(["--input-topic", &format!("kinesis:{REQUESTS}")])
        .args(["--output-topic", &format!("kinesis:{REPLIES}")])
        .args(["--dlq-topic", &format!("kinesis:{DEAD_LETTERS}")])
        .args([
            "--kinesis-endpoint",
            endpoint,
            "--kinesis-region",
            "us-east-1",
        ])
        .arg("--kinesis-checkpoint")
        .arg(dir.join("checkpoint.json"))
        .args(["--max-in-flight", "500", "--model"])
        .arg(model)
        .env_remove("RECSTREAM_BROKERS")
        .env("RUST_LOG", "info");
    Worker::spawn(command, dir, name)
}

/// Every record of `stream` (its shard, sequence number and JSON), read
/// until nothing new comes for two seconds.
fn read_stream(client: &Client, stream: &str) -> Vec<(String, String, Value)> {
    let mut records = Vec::new();
    runtime()
        .block_on(recstream_kinesis::tools::consume(
            client,
            stream,
            FirstStart::TrimHorizon,
            ConsumeLimits {
                max_messages: None,
                idle_timeout: Some(Duration::from_secs(2)),
            },
            tokio_util::sync::CancellationToken::new(),
            |record| {
                let value = serde_json::from_str(&record.payload).unwrap_or(Value::Null);
                records.push((record.shard.clone(), record.sequence_number.clone(), value));
                std::ops::ControlFlow::Continue(())
            },
        ))
        .unwrap();
    records
}

/// A Kinesis sequence number as a number: longer is later, then by digits.
fn sequence_key(sequence: &str) -> (usize, &str) {
    (sequence.len(), sequence)
}

fn replies_so_far(worker: &Worker) -> f64 {
    http_get(&worker.metrics, "/metrics")
        .and_then(|(_, body)| metric(&body, "recstream_replies_produced_total"))
        .unwrap_or(0.0)
}

#[test]
fn a_worker_killed_while_answering_a_kinesis_stream_answers_every_request_after_a_restart() {
    let _serial = support::serial();
    let Some(server) = KinesisLocal::start() else {
        return;
    };
    let client = runtime().block_on(server.client());
    let dir = tempfile::tempdir().unwrap();
    let model = support::synthetic_model(dir.path());

    let mut first = start_worker(&server.endpoint, &model, dir.path(), "first");
    assert!(
        wait_ready(&first.metrics, Duration::from_secs(120)),
        "the worker gets ready (it creates the streams): {}",
        first.log_text()
    );

    // Bad requests, beside the good ones: not JSON, and one too large.
    let mut bad = Command::new(recstream_binary())
        .args(["produce", "--topic", &format!("kinesis:{REQUESTS}")])
        .args(["--kinesis-endpoint", &server.endpoint])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = bad.stdin.take().unwrap();
        writeln!(stdin, "not json").unwrap();
        writeln!(stdin, "{{\"uid\":").unwrap();
        writeln!(stdin, "{{\"uid\":7,\"pad\":\"{}\"}}", "x".repeat(100_000)).unwrap();
    }
    assert!(
        bad.wait().unwrap().success(),
        "produce writes the bad requests"
    );

    let mut load = Command::new(recstream_binary())
        .args(["produce", "--topic", &format!("kinesis:{REQUESTS}")])
        .args(["--kinesis-endpoint", &server.endpoint])
        .args(["--uids", "1..400", "--count", &COUNT.to_string()])
        .args(["--rate", "800", "--id-prefix", "k"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while replies_so_far(&first) < 800.0 {
        assert!(
            Instant::now() < deadline,
            "replies flow: {}",
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let answered_before_kill = replies_so_far(&first);
    first.kill_9();
    assert!(
        load.try_wait().unwrap().is_none(),
        "the premise: the worker was killed while requests were still arriving"
    );
    let checkpoint: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("checkpoint.json")).unwrap())
            .unwrap();
    assert!(
        load.wait().unwrap().success(),
        "produce writes every request"
    );

    let mut second = start_worker(&server.endpoint, &model, dir.path(), "second");
    assert!(
        wait_ready(&second.metrics, Duration::from_secs(120)),
        "{}",
        second.log_text()
    );
    let deadline = Instant::now() + Duration::from_secs(180);
    let replies = loop {
        let replies = read_stream(&client, REPLIES);
        let answered: std::collections::HashSet<&str> = replies
            .iter()
            .filter_map(|(_, _, r)| r["request_id"].as_str())
            .collect();
        if answered.len() >= COUNT {
            break replies;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {COUNT} requests answered: {}",
            answered.len(),
            second.log_text()
        );
        std::thread::sleep(Duration::from_secs(1));
    };

    // Which request each id was, to compare with the checkpoint.
    let requests = read_stream(&client, REQUESTS);
    let place: HashMap<String, (String, String)> = requests
        .iter()
        .filter_map(|(shard, sequence, r)| {
            Some((
                r["request_id"].as_str()?.to_string(),
                (shard.clone(), sequence.clone()),
            ))
        })
        .collect();
    assert_eq!(place.len(), COUNT, "every request is on the stream once");
    let mut times: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, reply) in &replies {
        let id = reply["request_id"].as_str().unwrap();
        assert!(
            reply["recommendations"]
                .as_array()
                .is_some_and(|r| !r.is_empty()),
            "{reply}"
        );
        *times.entry(id).or_default() += 1;
    }
    let twice: Vec<&str> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| *id)
        .collect();
    for id in &twice {
        let (shard, sequence) = &place[*id];
        let saved = checkpoint["shards"][shard.as_str()]["after"]
            .as_str()
            .unwrap_or("");
        assert!(
            sequence_key(sequence) > sequence_key(saved),
            "request {id} (shard {shard}, {sequence}) was answered twice although the checkpoint was past it ({saved})"
        );
    }
    // At most what was answered by the kill (the metric, read just before,
    // plus what --max-in-flight lets through meanwhile).
    assert!(
        (twice.len() as f64) <= answered_before_kill + 500.0,
        "{} answered twice, {answered_before_kill} answered before the kill",
        twice.len()
    );

    // The bad requests are dead letters saying where they were.
    let letters = read_stream(&client, DEAD_LETTERS);
    let mut reasons: Vec<&str> = letters
        .iter()
        .map(|(_, _, l)| l["reason"].as_str().unwrap_or("?"))
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert!(
        letters.len() >= 3 && reasons.contains(&"too_large"),
        "{letters:?}"
    );
    for (_, _, letter) in &letters {
        assert_eq!(letter["topic"], format!("kinesis:{REQUESTS}"), "{letter}");
        assert!(
            letter["shard"].is_string() && letter["sequence_number"].is_string(),
            "{letter}"
        );
    }

    let (status, _) = second.terminate();
    assert!(status.success(), "{}", second.log_text());
}

#[test]
fn start_up_mistakes_on_kinesis_are_clear_errors() {
    let _serial = support::serial();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("absent.rsm");
    let model = model.to_str().unwrap();
    let limit = Duration::from_secs(60);

    // Following the model topic needs Kafka.
    let (status, stderr, _) = run_to_end(
        &[
            "serve",
            "--input-topic",
            "kinesis:requests",
            "--model",
            model,
        ],
        limit,
    );
    assert!(!status.success());
    assert!(
        stderr.contains("--brokers") && stderr.contains("--no-follow"),
        "{stderr}"
    );

    // Replies on Kinesis need requests from Kinesis.
    let (status, stderr, _) = run_to_end(
        &[
            "serve",
            "--brokers",
            "127.0.0.1:1",
            "--output-topic",
            "kinesis:replies",
        ],
        limit,
    );
    assert!(!status.success());
    assert!(stderr.contains("--input-topic kinesis:STREAM"), "{stderr}");

    // No transactions on Kinesis.
    let (status, stderr, _) = run_to_end(
        &[
            "serve",
            "--input-topic",
            "kinesis:r",
            "--no-follow",
            "--exactly-once",
            "--model",
            model,
        ],
        limit,
    );
    assert!(!status.success());
    assert!(stderr.contains("--exactly-once"), "{stderr}");

    // No region anywhere, and no local endpoint: an error, not a guess.
    let home = tempfile::tempdir().unwrap();
    let output = Command::new(recstream_binary())
        .args([
            "consume",
            "--topic",
            "kinesis:replies",
            "--idle-timeout",
            "5",
        ])
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("no AWS region") && stderr.contains("--kinesis-region"),
        "{stderr}"
    );

    // A stream that does not exist, against a live server.
    let Some(server) = KinesisLocal::start() else {
        return;
    };
    let _client = runtime().block_on(server.client());
    let trained = support::synthetic_model(dir.path());
    let (status, stderr, took) = run_to_end(
        &[
            "serve",
            "--input-topic",
            "kinesis:no-such-stream",
            "--output-topic",
            "kinesis:replies",
            "--dlq-topic",
            "kinesis:dead-letters",
            "--no-follow",
            "--kinesis-endpoint",
            &server.endpoint,
            "--model",
            trained.to_str().unwrap(),
        ],
        limit,
    );
    assert!(!status.success());
    assert!(
        stderr.contains("\"no-such-stream\" (requests) does not exist")
            && stderr.contains("--create-topics"),
        "{stderr}"
    );
    assert!(took < limit, "the error comes at start");
}

/// Writes one request to the Kinesis request stream, keyed by its user.
fn put_request(client: &Client, uid: &str, id: &str) {
    let payload = serde_json::json!({"uid": uid, "request_id": id}).to_string();
    runtime()
        .block_on(
            client
                .put_record()
                .stream_name(REQUESTS)
                .partition_key(uid)
                .data(payload.into_bytes().into())
                .send(),
        )
        .unwrap();
}

#[test]
fn a_kinesis_worker_replies_on_kafka_and_follows_the_model_topic() {
    let _serial = support::serial();
    let Some(tansu) = support::tansu_binary() else {
        return;
    };
    let Some(server) = KinesisLocal::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = support::Tansu::start(&tansu, dir.path());
    broker.create_topics(2);
    let client = runtime().block_on(server.client());
    runtime().block_on(kinesis_support::create_stream(&client, REQUESTS, 1));
    let first_model = support::synthetic_model(dir.path());
    let second_model = support::synthetic_model_named(dir.path(), "second.rsm", 2);

    let mut command = Command::new(recstream_binary());
    command
        .args(["serve", "--brokers", &broker.bootstrap])
        .args(["--input-topic", &format!("kinesis:{REQUESTS}")])
        .args(["--kinesis-endpoint", &server.endpoint])
        .arg("--kinesis-checkpoint")
        .arg(dir.path().join("checkpoint.json"))
        .arg("--model")
        .arg(&first_model)
        .env("RUST_LOG", "info");
    let mut worker = Worker::spawn(command, dir.path(), "worker");
    assert!(
        wait_ready(&worker.metrics, Duration::from_secs(120)),
        "{}",
        worker.log_text()
    );

    // A reply on Kafka for a request from Kinesis, keyed by its uid.
    let reply_to = |id: &str| {
        support::read_topic(
            &broker.bootstrap,
            support::OUT,
            Duration::from_secs(30),
            |r| r.iter().any(|r| r["request_id"] == id),
        )
        .into_iter()
        .find(|r| r["request_id"] == id)
    };
    put_request(&client, "7", "before");
    let before =
        reply_to("before").unwrap_or_else(|| panic!("a reply on Kafka: {}", worker.log_text()));
    let first_version = before["model_version"].as_str().unwrap().to_string();

    // A model published on Kafka reaches the Kinesis worker live.
    let published = support::publish_model(&broker.bootstrap, &second_model);
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    for attempt in 0.. {
        let id = format!("after-{attempt}");
        put_request(&client, "7", &id);
        let reply = reply_to(&id).unwrap_or_else(|| panic!("a reply: {}", worker.log_text()));
        if reply["model_version"].as_str() != Some(first_version.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the published model reaches the worker: {}",
            worker.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (status, _) = worker.terminate();
    assert!(status.success(), "{}", worker.log_text());
}

/// Every message of `topic` (four partitions, from the start) that a
/// relay wrote: its Kinesis shard and sequence number, read until `count`
/// are there and nothing more comes for two seconds, or `timeout` passes.
fn relayed_ratings(
    bootstrap: &str,
    topic: &str,
    count: usize,
    timeout: Duration,
) -> Vec<(String, String)> {
    use rdkafka::Message;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Headers;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "relay-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    for p in 0..4 {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + timeout;
    let mut found = Vec::new();
    let mut last = Instant::now();
    while Instant::now() < deadline
        && !(found.len() >= count && last.elapsed() > Duration::from_secs(2))
    {
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        last = Instant::now();
        let header = |name: &str| {
            message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        if let (Some(shard), Some(sequence)) = (header("kinesis-shard"), header("kinesis-sequence"))
        {
            found.push((shard, sequence));
        }
    }
    found
}

#[test]
fn a_learner_relaying_kinesis_ratings_puts_each_on_kafka_once_across_a_kill_9() {
    let _serial = support::serial();
    let Some(tansu) = support::tansu_binary() else {
        return;
    };
    let Some(server) = KinesisLocal::start() else {
        return;
    };
    const RATINGS: usize = 3_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = support::Tansu::start(&tansu, dir.path());
    let model = support::synthetic_model(dir.path());
    let client = runtime().block_on(server.client());
    runtime().block_on(kinesis_support::create_stream(&client, "ratings", 2));
    broker.create_online_topics();

    let learn = |name: &str| {
        support::Learner::start_with(
            &broker.bootstrap,
            &model,
            &dir.path().join("snapshots"),
            dir.path(),
            name,
            &[
                "--ratings-topic",
                "kinesis:ratings",
                "--kinesis-endpoint",
                &server.endpoint,
                "--kinesis-checkpoint",
                dir.path().join("relay.json").to_str().unwrap(),
            ],
        )
    };
    let relayed_so_far = |learner: &support::Learner| {
        http_get(&learner.metrics, "/metrics")
            .and_then(|(_, body)| metric(&body, "recstream_kinesis_relayed_total"))
            .unwrap_or(0.0)
    };
    let mut first = learn("first");
    assert!(
        first.wait_learning(Duration::from_secs(120)),
        "{}",
        first.log_text()
    );
    let mut load = Command::new(recstream_binary())
        .args(["produce", "--topic", "kinesis:ratings"])
        .args(["--kinesis-endpoint", &server.endpoint])
        .arg("--ratings")
        .arg(dir.path().join("ratings.tsv"))
        .args(["--limit", &RATINGS.to_string(), "--rate", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while relayed_so_far(&first) < 500.0 {
        assert!(
            Instant::now() < deadline,
            "ratings are relayed: {}",
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    first.kill_9();
    assert!(
        load.try_wait().unwrap().is_none(),
        "the premise: the learner was killed while ratings were arriving"
    );
    assert!(load.wait().unwrap().success());

    let second = learn("second");
    assert!(
        second.wait_learning(Duration::from_secs(120)),
        "{}",
        second.log_text()
    );
    let relayed = relayed_ratings(
        &broker.bootstrap,
        support::RATINGS,
        RATINGS,
        Duration::from_secs(90),
    );
    let distinct: std::collections::BTreeSet<&(String, String)> = relayed.iter().collect();
    assert_eq!(
        distinct.len(),
        RATINGS,
        "every rating relayed: {}",
        second.log_text()
    );
    assert_eq!(
        relayed.len(),
        RATINGS,
        "none relayed twice: {}",
        second.log_text()
    );
    let learnt = http_get(&second.metrics, "/metrics")
        .and_then(|(_, body)| metric(&body, "recstream_ratings_learnt_total"))
        .unwrap_or(0.0);
    assert!(
        learnt > 0.0,
        "the restarted learner learns the relayed ratings"
    );
}
