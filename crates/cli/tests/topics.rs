//! Start-up checks, against a Tansu broker process and the embedded broker
//! (librdkafka's mock cluster): a missing or mis-shaped topic stops each
//! command within seconds with an error that names the topic and the fix,
//! and `--create-topics` makes an empty broker work on the first rating.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use support::*;

/// A missing topic must be reported within this long.
const CHECK_LIMIT: Duration = Duration::from_secs(10);

/// The commands of the issue, on a broker that has every topic but the
/// model topics (and, for `produce`, the topic it is pointed at).
fn commands<'a>(
    bootstrap: &'a str,
    model: &'a str,
    snapshots: &'a str,
) -> Vec<(Vec<&'a str>, &'static str)> {
    let mut serve = vec!["serve", "--brokers", bootstrap, "--model", model];
    serve.extend(FAST_GROUP);
    vec![
        (serve, MODEL_TOPIC),
        (
            vec![
                "learn",
                "--brokers",
                bootstrap,
                "--model",
                model,
                "--snapshot-dir",
                snapshots,
            ],
            MODEL_TOPIC,
        ),
        (
            vec!["model", "publish", model, "--brokers", bootstrap],
            MODEL_TOPIC,
        ),
        (
            vec![
                "produce",
                "--brokers",
                bootstrap,
                "--topic",
                "no-such-topic",
            ],
            "no-such-topic",
        ),
    ]
}

fn assert_refused(args: &[&str], topic: &str) {
    let (status, stderr, took) = run_to_end(args, Duration::from_secs(60));
    assert!(!status.success(), "{args:?} exited {status}\n{stderr}");
    assert!(took < CHECK_LIMIT, "{args:?} took {took:?}\n{stderr}");
    assert!(
        stderr.contains(&format!("topic \"{topic}\" does not exist")),
        "{args:?} names {topic}\n{stderr}"
    );
    assert!(
        stderr.contains("--create-topics"),
        "{args:?} names the fix\n{stderr}"
    );
}

/// True when the broker knows `topic` (asked without creating it).
fn topic_exists(bootstrap: &str, topic: &str) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("allow.auto.create.topics", "false")
        .create()
        .expect("metadata client");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
}

#[test]
fn each_command_names_a_missing_topic_and_the_fix_within_seconds_on_tansu() {
    let _serial = serial();
    let Some(binary) = tansu_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(&binary, dir.path());
    broker.create(&[(IN, 4), (OUT, 4), (DLQ, 4), (RATINGS, 4), (RATINGS_DLQ, 4)]);
    let model = synthetic_model(dir.path());
    let (model, snapshots) = (model.to_string_lossy(), dir.path().join("snapshots"));
    let snapshots = snapshots.to_string_lossy();
    for (args, topic) in commands(&broker.bootstrap, &model, &snapshots) {
        assert_refused(&args, topic);
    }
    // The checks asked about the topics without creating them.
    assert!(!topic_exists(&broker.bootstrap, MODEL_TOPIC));
    assert!(!topic_exists(&broker.bootstrap, "no-such-topic"));
    assert!(
        topic_exists(&broker.bootstrap, RATINGS),
        "the premise: the broker answers"
    );
}

#[test]
fn each_command_names_a_missing_topic_and_the_fix_within_seconds_on_the_embedded_broker() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).expect("mock cluster");
    for topic in [IN, OUT, DLQ, RATINGS, RATINGS_DLQ] {
        cluster.create_topic(topic, 4, 1).expect("topic");
    }
    let bootstrap = cluster.bootstrap_servers();
    let model = synthetic_model(dir.path());
    let (model, snapshots) = (model.to_string_lossy(), dir.path().join("snapshots"));
    let snapshots = snapshots.to_string_lossy();
    for (args, topic) in commands(&bootstrap, &model, &snapshots) {
        assert_refused(&args, topic);
    }
    // The mock creates any topic a producer asks about: the checks must not have.
    assert!(!topic_exists(&bootstrap, MODEL_TOPIC));
    assert!(!topic_exists(&bootstrap, "no-such-topic"));
    assert!(
        topic_exists(&bootstrap, RATINGS),
        "the premise: the broker answers"
    );
}

#[test]
fn a_model_topic_that_is_not_compacted_is_refused_naming_the_setting() {
    let _serial = serial();
    let Some(binary) = tansu_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(&binary, dir.path());
    broker.create(&[
        (IN, 4),
        (OUT, 4),
        (DLQ, 4),
        (RATINGS, 4),
        (RATINGS_DLQ, 4),
        (MODEL_TOPIC, 1),
        (DELTAS_TOPIC, 4),
        (FILES_TOPIC, 1),
    ]);
    let model = synthetic_model(dir.path());
    let model = model.to_string_lossy();
    let snapshots = dir.path().join("snapshots");
    let snapshots = snapshots.to_string_lossy();
    let mut serve = vec!["serve", "--brokers", &broker.bootstrap, "--model", &model];
    serve.extend(FAST_GROUP);
    let learn = vec![
        "learn",
        "--brokers",
        &broker.bootstrap,
        "--model",
        &model,
        "--snapshot-dir",
        &snapshots,
    ];
    for args in [serve, learn] {
        let (status, stderr, took) = run_to_end(&args, Duration::from_secs(60));
        assert!(!status.success(), "{args:?} exited {status}\n{stderr}");
        assert!(took < CHECK_LIMIT, "{args:?} took {took:?}\n{stderr}");
        assert!(
            stderr.contains(&format!("topic \"{MODEL_TOPIC}\" has cleanup.policy="))
                && stderr.contains("needs cleanup.policy=compact"),
            "{args:?} names the setting\n{stderr}"
        );
    }
}

/// A `recstream` process with its log in `dir`; killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], log: &Path) -> Process {
    let file = std::fs::File::create(log).expect("log file");
    Process(
        Command::new(recstream_binary())
            .args(args)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start recstream"),
    )
}

#[test]
fn with_create_topics_an_empty_broker_works_on_the_first_rating_twenty_times_in_a_row() {
    let _serial = serial();
    let Some(binary) = tansu_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(dir.path());
    let model = model.to_string_lossy();
    for round in 0..20 {
        let round_dir = dir.path().join(format!("round-{round}"));
        std::fs::create_dir_all(&round_dir).unwrap();
        let broker = Tansu::start(&binary, &round_dir);
        assert!(
            !topic_exists(&broker.bootstrap, MODEL_TOPIC),
            "the premise: an empty broker"
        );
        let (learner_metrics, worker_metrics) = (
            format!("127.0.0.1:{}", free_port()),
            format!("127.0.0.1:{}", free_port()),
        );
        let snapshots = round_dir.join("snapshots");
        let snapshots = snapshots.to_string_lossy();
        // Both create the topics at the same moment: a topic the other one
        // created first must not be an error.
        let learner = spawn(
            &[
                "learn",
                "--brokers",
                &broker.bootstrap,
                "--model",
                &model,
                "--snapshot-dir",
                &snapshots,
                "--create-topics",
                "--metrics-addr",
                &learner_metrics,
            ],
            &round_dir.join("learner.log"),
        );
        let mut serve = vec![
            "serve",
            "--brokers",
            &broker.bootstrap,
            "--model",
            &model,
            "--create-topics",
            "--metrics-addr",
            &worker_metrics,
        ];
        serve.extend(FAST_GROUP);
        let worker = spawn(&serve, &round_dir.join("worker.log"));
        let logs = || {
            ["learner.log", "worker.log"]
                .map(|f| std::fs::read_to_string(round_dir.join(f)).unwrap_or_default())
                .join("\n---\n")
        };
        assert!(
            wait_ready(&learner_metrics, Duration::from_secs(60)),
            "round {round}: learner ready\n{}",
            logs()
        );
        assert!(
            wait_ready(&worker_metrics, Duration::from_secs(60)),
            "round {round}: worker ready\n{}",
            logs()
        );
        let user = format!("newcomer-{round}");
        let event = format!(r#"{{"uid": "{user}", "iid": "1", "rating": 5}}"#);
        produce(&broker.bootstrap, RATINGS, &[event.into_bytes()]);
        let reply = ask_until(
            &broker.bootstrap,
            OUT,
            &user,
            Duration::from_secs(60),
            |r| r["cold_start"] == false,
        );
        assert!(
            reply.is_some(),
            "round {round}: the first rating made {user} known\n{}",
            logs()
        );
        drop((worker, learner));
    }
}

#[test]
fn consume_stops_when_its_reader_goes_away() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster.create_topic(OUT, 2, 1).expect("topic");
    let bootstrap = cluster.bootstrap_servers();
    let messages: Vec<Vec<u8>> = (0..50)
        .map(|i| format!(r#"{{"n": {i}}}"#).into_bytes())
        .collect();
    produce(&bootstrap, OUT, &messages);
    // `consume ... | head -1` once head has its line: stdout is a pipe
    // nobody reads. Without an idle timeout, only that can end the command.
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let mut child = Command::new(recstream_binary())
        .args([
            "consume",
            "--brokers",
            &bootstrap,
            "--topic",
            OUT,
            "--from-beginning",
        ])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start consume");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.is_some(),
        "consume kept running with nobody reading\n{stderr}"
    );
    assert!(output.status.success(), "{:?}\n{stderr}", output.status);
}

#[test]
fn consume_waits_for_a_topic_that_does_not_exist_yet_and_then_reads_it() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("consume.log");
    let child = Command::new(recstream_binary())
        .args([
            "consume",
            "--brokers",
            &bootstrap,
            "--topic",
            "late-topic",
            "--from-beginning",
            "--max-messages",
            "1",
        ])
        .env("RUST_LOG", "info,librdkafka=warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start consume");
    let mut child = Process(child);
    // It says it waits, and does not create the topic.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("waiting for topic \"late-topic\"")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no waiting message: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        !topic_exists(&bootstrap, "late-topic"),
        "consume must not create the topic"
    );
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "consume is still waiting"
    );
    cluster.create_topic("late-topic", 1, 1).expect("topic");
    produce(&bootstrap, "late-topic", &[b"{\"hello\": 1}".to_vec()]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "consume did not read the late topic: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let mut printed = String::new();
    std::io::Read::read_to_string(child.0.stdout.as_mut().unwrap(), &mut printed).unwrap();
    assert_eq!(printed.trim(), "{\"hello\": 1}");
}

#[test]
fn create_topics_works_on_the_embedded_broker_which_has_no_create_topics_api() {
    let _serial = serial();
    let cluster = MockCluster::new(1).expect("mock cluster");
    let bootstrap = cluster.bootstrap_servers();
    assert!(
        !topic_exists(&bootstrap, "made-on-request"),
        "the premise: it is missing"
    );
    let mut child = Command::new(recstream_binary())
        .args([
            "produce",
            "--brokers",
            &bootstrap,
            "--topic",
            "made-on-request",
            "--create-topics",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start produce");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"{\"uid\": 1}\n").unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().expect("produce output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("produced 1 message(s)"), "{stderr}");
    assert!(topic_exists(&bootstrap, "made-on-request"));
}

#[test]
fn settings_that_could_only_loop_are_refused_before_connecting() {
    // Nothing listens on port 9: a command that tried the broker first would
    // wait for it instead of answering at once.
    let cases: [(&[&str], &str); 4] = [
        (
            &[
                "serve",
                "--brokers",
                "127.0.0.1:9",
                "--model",
                "none.rsm",
                "--output-topic",
                IN,
            ],
            "--output-topic",
        ),
        (
            &[
                "serve",
                "--brokers",
                "127.0.0.1:9",
                "--model",
                "none.rsm",
                "--dlq-topic",
                IN,
            ],
            "--dlq-topic",
        ),
        (
            &[
                "learn",
                "--brokers",
                "127.0.0.1:9",
                "--model",
                "none.rsm",
                "--model-topic",
                RATINGS,
            ],
            "--ratings-topic",
        ),
        (
            &["run", "--model", "none.rsm", "--model-topic", IN],
            "--model-topic",
        ),
    ];
    for (args, setting) in cases {
        let (status, stderr, took) = run_to_end(args, Duration::from_secs(20));
        assert!(
            status.code().is_some_and(|c| c != 0),
            "{args:?} exited by itself with an error: {status}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert!(
            stderr.contains(setting) && stderr.contains("own output"),
            "{args:?} names {setting}: {stderr}"
        );
    }
}
