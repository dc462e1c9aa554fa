//! `recstream run` on its embedded broker, talked to by an outside Kafka client.
//!
//! This is the README's promise: one command starts a broker, a model and a
//! worker, and any Kafka client in another process can produce a request and
//! read the reply. Here the other process is this test, with its own client,
//! a Python client on confluent-kafka, and kcat.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

#[test]
fn run_serves_an_outside_client_through_its_embedded_broker_and_stops_on_sigterm() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(dir.path());
    let mut run = Run::start(&model, dir.path(), &["--metrics-addr", "127.0.0.1:0"]);
    let broker = run.broker.clone();
    assert!(broker.starts_with("127.0.0.1:"), "{broker}");

    produce(
        &broker,
        IN,
        &[
            br#"{"uid": 7, "request_id": "outside-1"}"#.to_vec(),
            b"garbage".to_vec(),
        ],
    );
    let replies = read_topic(&broker, OUT, Duration::from_secs(60), |r| !r.is_empty());
    assert_eq!(replies.len(), 1, "one reply");
    assert_eq!(replies[0]["request_id"], "outside-1");
    assert_eq!(replies[0]["uid"], 7);
    assert_eq!(
        replies[0]["recommendations"].as_array().map(Vec::len),
        Some(10)
    );
    let letters = read_topic(&broker, DLQ, Duration::from_secs(30), |l| !l.is_empty());
    assert_eq!(letters[0]["reason"], "invalid_json");

    let started = Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &run.child.id().to_string()])
        .status();
    let status = loop {
        if let Some(status) = run.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "run did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

/// Outside clients are not all built on recstream's librdkafka: the Python
/// `confluent-kafka` of the bench venv bundles its own version, which asks
/// for its own API versions. It lists the topics, produces requests with an
/// idempotent producer, reads the replies in a consumer group the broker's
/// coordinator assigns, and commits.
#[test]
fn a_confluent_kafka_client_in_python_produces_consumes_in_a_group_and_commits() {
    let Some(python) = bench_python("confluent_kafka") else {
        return;
    };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(dir.path());
    let run = Run::start(&model, dir.path(), &["--no-learn"]);
    let output = Command::new(python)
        .arg(repo_root().join("crates/cli/tests/support/confluent_client.py"))
        .args([&run.broker, "40"])
        .output()
        .expect("start the Python client");
    assert!(
        output.status.success(),
        "the Python client failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "the client's line ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    });
    assert_eq!(seen["topics"][IN], 4, "{seen}");
    assert_eq!(seen["topics"][OUT], 4, "{seen}");
    assert_eq!(seen["answered"], 40, "every request answered: {seen}");
    assert_eq!(seen["full_replies"], 40, "ten movies each: {seen}");
    assert_eq!(
        seen["assigned"], 4,
        "the group gave it every partition: {seen}"
    );
    assert_eq!(seen["committed"], 4, "its commit reads back: {seen}");
}

/// `kcat`, or `None` (after saying so loudly) outside CI.
fn kcat() -> Option<PathBuf> {
    on_path("kcat").or_else(|| {
        missing_tool("kcat is not installed; .ci/run installs it (apt-get install kcat)")
    })
}

/// The banner's own suggestion, `kcat`, with Debian's librdkafka (a third
/// version): metadata, a keyed produce, and a balanced group consumer.
#[test]
fn kcat_lists_produces_and_consumes_in_a_group() {
    let Some(binary) = kcat() else { return };
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(dir.path());
    let run = Run::start(&model, dir.path(), &["--no-learn"]);
    let kcat = |args: &[&str], stdin: &str| {
        let output = assert_cmd::Command::new(&binary)
            .args(["-b", &run.broker])
            .args(args)
            .write_stdin(stdin.to_string())
            .timeout(Duration::from_secs(60))
            .output()
            .expect("kcat runs");
        assert!(
            output.status.success(),
            "kcat {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("UTF-8 from kcat")
    };

    let metadata: serde_json::Value = serde_json::from_str(&kcat(&["-L", "-J"], "")).unwrap();
    let partitions = |topic: &str| {
        metadata["topics"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["topic"] == topic))
            .and_then(|t| t["partitions"].as_array())
            .map(Vec::len)
    };
    assert_eq!(partitions(IN), Some(4), "{metadata}");
    assert_eq!(partitions(OUT), Some(4), "{metadata}");

    let requests: String = (0..20)
        .map(|i| {
            format!(
                "{}:{{\"uid\": {}, \"request_id\": \"kcat-{i}\"}}\n",
                1 + i,
                1 + i
            )
        })
        .collect();
    kcat(&["-P", "-t", IN, "-K", ":"], &requests);

    let replies = kcat(
        &[
            "-G",
            "kcat-group",
            "-X",
            "auto.offset.reset=earliest",
            "-c",
            "20",
            "-q",
            OUT,
        ],
        "",
    );
    let ids: std::collections::BTreeSet<String> = replies
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|r| r["recommendations"].as_array().map(Vec::len) == Some(10))
        .filter_map(|r| r["request_id"].as_str().map(str::to_string))
        .collect();
    let expected: std::collections::BTreeSet<String> =
        (0..20).map(|i| format!("kcat-{i}")).collect();
    assert_eq!(
        ids, expected,
        "kcat read every reply in its group:\n{replies}"
    );
}

#[test]
fn of_two_workers_sharing_partitions_one_is_killed_and_the_other_takes_over() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(dir.path());
    let run_log = dir.path().join("run.log");
    let run_metrics = format!("127.0.0.1:{}", free_port());
    let mut run = Command::new(recstream_binary())
        .args(["run", "--no-learn", "--no-follow", "--group-id", "pair"])
        .args(["--partitions", "4"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--metrics-addr", &run_metrics])
        .args(FAST_GROUP)
        .arg("--model")
        .arg(&model)
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&run_log).unwrap())
        .spawn()
        .expect("start recstream run");
    let stdout = run.stdout.take().expect("stdout");
    let broker = broker_address(&mut BufReader::new(stdout).lines());
    let mut other = Worker::start(
        &broker,
        &model,
        "pair",
        dir.path(),
        "other",
        &["--no-follow"],
    );
    assert!(
        other.wait_assigned(Duration::from_secs(60)),
        "{}",
        other.log_text()
    );
    // The premise: the two share the partitions before one is killed.
    let shared = wait_metric(
        &run_metrics,
        "recstream_assigned_partitions",
        Duration::from_secs(60),
        |n| n > 0.0 && n < 4.0,
    );
    assert!(
        shared.is_some_and(|n| n > 0.0 && n < 4.0),
        "the partitions were shared ({shared:?})\n{}",
        std::fs::read_to_string(&run_log).unwrap_or_default()
    );
    let load = std::thread::spawn({
        let broker = broker.clone();
        move || {
            for chunk in 0..50 {
                let batch: Vec<Vec<u8>> = (0..100)
                    .map(|i| {
                        format!(
                            r#"{{"uid": {}, "request_id": "k-{}"}}"#,
                            1 + i % 400,
                            chunk * 100 + i
                        )
                        .into_bytes()
                    })
                    .collect();
                produce(&broker, IN, &batch);
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    });
    std::thread::sleep(Duration::from_secs(3));
    let still_sending = !load.is_finished();
    other.kill_9();
    assert!(
        still_sending,
        "the premise: requests were still arriving at the kill"
    );
    load.join().unwrap();
    let replies = wait_for_replies(&broker, &ids("k", 5000), Duration::from_secs(120));
    let run_text = std::fs::read_to_string(&run_log).unwrap_or_default();
    assert_eq!(
        replies_per_request(&replies).len(),
        5000,
        "every request answered after the crash\n{run_text}"
    );
    let took_over = wait_metric(
        &run_metrics,
        "recstream_assigned_partitions",
        Duration::from_secs(60),
        |n| n == 4.0,
    );
    assert_eq!(
        took_over,
        Some(4.0),
        "after sharing, the survivor took all partitions\n{run_text}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &run.id().to_string()])
        .status();
    let _ = run.wait();
}

/// `run` on the same data folder a second time starts from the snapshot the
/// first one left, on a new, empty embedded broker. Every rating sent to the
/// second run must be learnt. The snapshot used to keep the learner's
/// per-partition logs, so the second learner resumed the new ratings topic
/// at the first run's offsets and skipped every rating below them, silently.
#[test]
fn a_second_run_on_the_same_data_folder_learns_every_new_rating() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(dir.path());
    let snapshot = dir.path().join("data").join("snapshots").join("latest.rsm");
    const RATINGS_SENT: usize = 200;
    let ratings: Vec<Vec<u8>> = (0..RATINGS_SENT)
        .map(|i| {
            format!(
                r#"{{"uid": {}, "iid": {}, "rating": {}}}"#,
                1 + i % 40,
                1 + (i * 7) % 60,
                1 + i % 5
            )
            .into_bytes()
        })
        .collect();
    for round in ["first", "second"] {
        if round == "second" {
            assert!(snapshot.is_file(), "the first run left a snapshot");
        }
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut run = Run::start(&model, dir.path(), &["--metrics-addr", &metrics]);
        produce(&run.broker, RATINGS, &ratings);
        let learnt = wait_metric(
            &metrics,
            "recstream_ratings_learnt_total",
            Duration::from_secs(60),
            |n| n >= RATINGS_SENT as f64,
        );
        assert_eq!(
            learnt,
            Some(RATINGS_SENT as f64),
            "the {round} run learnt every rating sent to it"
        );
        // SIGTERM: the learner writes its snapshot on the way out.
        let _ = Command::new("kill")
            .args(["-TERM", &run.child.id().to_string()])
            .status();
        let started = Instant::now();
        while run.child.try_wait().unwrap().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "run did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
