//! The fault suite: under steady request and rating load, workers and the
//! learner are killed with SIGKILL and restarted at random moments, and the
//! broker goes away and comes back. Then every request must have a reply,
//! every rating must have been applied exactly once, every worker must serve
//! exactly what a fresh replay of the same updates serves, and memory must
//! not have grown. A second test fills the model topic past what
//! librdkafka's mock cluster keeps (5 MiB a partition): a worker that would
//! miss updates stops with an error saying so, and one started from a
//! snapshot converges.
//!
//! The broker of the first test is `recstream-broker`, in this test process
//! (the embedded broker of `recstream run`), so that it can be taken down
//! and brought back; the workers and the learner are real `recstream`
//! processes; a learner that stops by itself is restarted, as the README
//! asks of a supervisor. `FAULT_CYCLES` sets the number of kill cycles (10 by
//! default; `bench/soak.sh` runs 100), `FAULT_RATE` the load (150 requests
//! and 150 ratings a second) and `FAULT_SEED` the random seed.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use recstream_broker::{Broker, BrokerConfig};
use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(180);
/// Requests and ratings per second of the steady load, unless `FAULT_RATE`
/// says otherwise.
fn rate() -> usize {
    std::env::var("FAULT_RATE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(150)
}

/// A small deterministic random source (xorshift), seeded per run.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The embedded broker of `recstream run`, in this process, with `topics`
/// created (the model topic compacted, as the workers check).
fn embedded_broker(topics: &[(&str, i32)]) -> Broker {
    let broker = Broker::start(BrokerConfig {
        retention_bytes: recstream_stream::embedded::RETENTION_BYTES,
        ..BrokerConfig::default()
    })
    .expect("broker");
    for &(topic, partitions) in topics {
        let configs: &[(&str, &str)] = if topic == MODEL_TOPIC {
            &[("cleanup.policy", "compact")]
        } else {
            &[]
        };
        broker.create_topic(topic, partitions, configs).unwrap();
    }
    broker
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// What each worker owns and logged last (newest line first), for the
/// message of a failed check: workers `a` and `b`, then `others`.
fn workers_report(workers: &[Worker], others: &[(&str, &Worker)]) -> String {
    let named = ["a", "b"]
        .into_iter()
        .zip(workers)
        .chain(others.iter().copied());
    let mut out = format!(
        "partitions owned: {:?}",
        workers
            .iter()
            .map(Worker::assigned_partitions)
            .collect::<Vec<_>>()
    );
    for (name, worker) in named {
        let text = worker.log_text();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        out.push_str(&format!(
            "\n--- {name} (last lines, newest first) ---\n{}",
            tail.join("\n")
        ));
    }
    out
}

/// The model a process should start from: the learner's latest snapshot
/// once there is one (the embedded broker may have dropped the head of the
/// model topic), the batch model before.
fn start_model(batch: &Path, snapshots: &Path) -> PathBuf {
    let snapshot = snapshots.join("latest.rsm");
    if snapshot.is_file() {
        snapshot
    } else {
        batch.to_path_buf()
    }
}

/// The sequence number of a snapshot (`<batch id>+<seq>`), read with
/// `recstream model info --json`.
fn snapshot_sequence(path: &Path) -> Option<u64> {
    let output = std::process::Command::new(recstream_binary())
        .args(["model", "info", "--json"])
        .arg(path)
        .output()
        .ok()?;
    let info: Value = serde_json::from_slice(&output.stdout).ok()?;
    info["model_version"]
        .as_str()?
        .rsplit_once('+')?
        .1
        .parse()
        .ok()
}

/// One rating per index: user, item and value cycle so that every event is
/// different and users rate again and again.
fn rating(i: usize) -> Vec<u8> {
    format!(
        r#"{{"uid": {}, "iid": {}, "rating": {}}}"#,
        1 + i % 450,
        1 + (i * 13) % 390,
        1 + i % 5
    )
    .into_bytes()
}

#[test]
fn kills_restarts_and_outages_under_load_lose_nothing_and_apply_each_rating_once() {
    let _serial = serial();
    let cycles: usize = std::env::var("FAULT_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| unique() as u64 | 1);
    eprintln!(
        "fault suite: {cycles} cycles, FAULT_SEED={seed}, FAULT_RATE={}",
        rate()
    );
    let mut dice = Dice(seed);
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    let cluster = embedded_broker(&[
        (IN, 4),
        (OUT, 4),
        (DLQ, 4),
        (RATINGS, 4),
        (RATINGS_DLQ, 4),
        (MODEL_TOPIC, 4),
        (DELTAS_TOPIC, 4),
        (FILES_TOPIC, 1),
        ("probe-in", 1),
        ("probe-out", 1),
    ]);
    let bootstrap = cluster.bootstrap();
    let batch = synthetic_model(dir.path());
    let snapshots = dir.path().join("snapshots");

    let mut workers: Vec<Worker> = ["a", "b"]
        .iter()
        .map(|name| Worker::start(&bootstrap, &batch, "faults", logs, name, &[]))
        .collect();
    let mut learner = Learner::start(&bootstrap, &batch, &snapshots, logs, "learner-0");
    assert!(learner.wait_learning(LONG), "{}", learner.log_text());
    for worker in &workers {
        assert!(worker.wait_assigned(LONG), "{}", worker.log_text());
    }

    // Steady load on two threads, until told to stop; each remembers how
    // many it sent.
    let stop = Arc::new(AtomicBool::new(false));
    let rate = rate();
    let load = |topic: &'static str, make: fn(usize) -> Vec<u8>| {
        let (bootstrap, stop) = (bootstrap.clone(), stop.clone());
        std::thread::spawn(move || {
            // One producer for the whole run, paced at the rate a second; every
            // message is acknowledged before it counts as sent. Idempotent, so
            // that a retry after a broker outage never writes a message twice:
            // the count of ratings sent is then the count the learner must
            // apply.
            let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("linger.ms", "5")
                .set("enable.idempotence", "true")
                .create()
                .expect("producer");
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            let started = std::time::Instant::now();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
                let batch: Vec<Vec<u8>> = (sent..due.max(sent)).map(make).collect();
                // Keyed by uid, as ratings must be.
                let keys: Vec<String> = batch
                    .iter()
                    .map(|payload| uid_key(payload).unwrap_or_default())
                    .collect();
                runtime.block_on(async {
                    let pending: Vec<_> = batch
                        .iter()
                        .zip(&keys)
                        .map(|(payload, key)| {
                            let record = rdkafka::producer::FutureRecord::to(topic)
                                .key(key)
                                .payload(payload);
                            producer.send(record, Duration::from_secs(60))
                        })
                        .collect();
                    for delivered in futures::future::join_all(pending).await {
                        delivered.expect("load delivered to the broker");
                    }
                });
                sent += batch.len();
                std::thread::sleep(Duration::from_millis(50));
            }
            sent
        })
    };
    let requests = load(IN, |i| {
        format!(r#"{{"uid": {}, "request_id": "f-{i}"}}"#, 1 + i % 500).into_bytes()
    });
    let ratings = load(RATINGS, rating);

    // The README asks for the learner to run under a supervisor: one that
    // stops by itself (a delivery it cannot complete) is restarted, as a
    // supervisor would, and counted.
    let mut supervised = 0usize;
    let supervise = |learner: &mut Learner, supervised: &mut usize, name: String| {
        if let Ok(Some(status)) = learner.child.try_wait() {
            eprintln!("fault suite: the learner exited by itself ({status}); restarting it");
            let model = start_model(&batch, &snapshots);
            *learner = Learner::start(&bootstrap, &model, &snapshots, logs, &name);
            *supervised += 1;
        }
    };
    // Workers likewise: one that stops by itself (for example because the
    // embedded broker dropped model updates it had not read yet, which it
    // refuses to skip) is restarted from the latest snapshot and counted.
    let mut workers_supervised = 0usize;
    let supervise_worker = |worker: &mut Worker, supervised: &mut usize, name: String| {
        if let Ok(Some(status)) = worker.child.try_wait() {
            let log = worker.log_text();
            let last = log.lines().rev().take(3).collect::<Vec<_>>();
            eprintln!("fault suite: worker exited by itself ({status}): {last:?}; restarting it");
            let model = start_model(&batch, &snapshots);
            *worker = Worker::start(&bootstrap, &model, "faults", logs, &name, &[]);
            *supervised += 1;
        }
    };
    let mut kills = [0usize; 3];
    let mut outages = 0;
    let mut restarts = 0;
    for cycle in 0..cycles {
        std::thread::sleep(Duration::from_millis(1000 + dice.below(2000)));
        supervise(
            &mut learner,
            &mut supervised,
            format!("learner-supervised-{cycle}"),
        );
        for (i, worker) in workers.iter_mut().enumerate() {
            let name = format!("{}-supervised-{cycle}", ["a", "b"][i]);
            supervise_worker(worker, &mut workers_supervised, name);
        }
        let victim = dice.below(if cycle % 4 == 3 { 4 } else { 3 }) as usize;
        match victim {
            0 | 1 => {
                let name = format!("{}-{cycle}", ["a", "b"][victim]);
                workers[victim].kill_9();
                let model = start_model(&batch, &snapshots);
                workers[victim] = Worker::start(&bootstrap, &model, "faults", logs, &name, &[]);
                kills[victim] += 1;
            }
            2 => {
                let was_learning =
                    http_get(&learner.metrics, "/readyz").is_some_and(|(status, _)| status == 200);
                learner.kill_9();
                assert!(
                    was_learning,
                    "the premise: the learner was working when killed\n{}",
                    learner.log_text()
                );
                let model = start_model(&batch, &snapshots);
                learner = Learner::start(
                    &bootstrap,
                    &model,
                    &snapshots,
                    logs,
                    &format!("learner-{cycle}"),
                );
                assert!(learner.wait_learning(LONG), "{}", learner.log_text());
                kills[2] += 1;
            }
            _ => {
                cluster.set_down(true);
                std::thread::sleep(Duration::from_millis(1000 + dice.below(2000)));
                cluster.set_down(false);
                outages += 1;
            }
        }
        restarts += 1;
    }
    // Warm: every process up. Memory is measured from here.
    for (i, worker) in workers.iter_mut().enumerate() {
        let deadline = std::time::Instant::now() + LONG;
        let mut round = 0;
        while !worker.wait_assigned(Duration::from_secs(1)) {
            round += 1;
            let name = format!("{}-supervised-warm-{round}", ["a", "b"][i]);
            supervise_worker(worker, &mut workers_supervised, name);
            assert!(
                std::time::Instant::now() < deadline,
                "worker never owned a partition\n{}",
                worker.log_text()
            );
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<(String, u32)> = workers
        .iter()
        .map(|w| ("worker".to_string(), w.child.id()))
        .chain([("learner".to_string(), learner.child.id())])
        .collect();
    let warm: Vec<u64> = pids
        .iter()
        .map(|(_, pid)| rss_kib(*pid).unwrap_or(0))
        .collect();
    std::thread::sleep(Duration::from_secs(4));
    stop.store(true, Ordering::Relaxed);
    let sent_requests = requests.join().unwrap();
    let sent_ratings = ratings.join().unwrap();
    eprintln!(
        "fault suite: {restarts} faults ({} kills of worker a, {} of worker b, {} of the learner, {outages} broker outages); {sent_requests} requests, {sent_ratings} ratings sent",
        kills[0], kills[1], kills[2]
    );

    // Every request answered at least once.
    let expected: HashSet<String> = (0..sent_requests).map(|i| format!("f-{i}")).collect();
    let replies = wait_for_replies(&bootstrap, &expected, LONG);
    let counts = replies_per_request(&replies);
    let missing: Vec<usize> = (0..sent_requests)
        .filter(|i| !counts.contains_key(&format!("f-{i}")))
        .collect();
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    // What the broker holds: a reply topic that outgrew the retention
    // would hide answered requests from this check (log start above 0).
    let held = |topic: &str| {
        cluster
            .partition_stats(topic)
            .unwrap_or_default()
            .iter()
            .map(|p| {
                format!(
                    "[{}..{}) {:.1} MiB",
                    p.log_start_offset,
                    p.log_end_offset,
                    p.stored_bytes as f64 / (1024.0 * 1024.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let held = format!("requests topic {}; replies topic {}", held(IN), held(OUT));
    eprintln!(
        "fault suite: {} answered, {} lost, {duplicates} duplicate replies ({} replies read); the broker holds: {held}",
        counts.len(),
        missing.len(),
        replies.len()
    );
    assert!(
        missing.is_empty(),
        "every request answered: {} unanswered, first {:?}, last {:?}; the broker holds: {held}; group offsets (committed, end): {:?}; {}",
        missing.len(),
        &missing[..missing.len().min(5)],
        &missing[missing.len().saturating_sub(5)..],
        committed_vs_end(&bootstrap, "faults", 4),
        workers_report(&workers, &[]),
    );

    // The premise of the count below: the ratings topic holds each rating
    // sent exactly once (no producer retry wrote one twice).
    let reader: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let stored: i64 = (0..4)
        .map(|p| {
            rdkafka::consumer::Consumer::fetch_watermarks(
                &reader,
                RATINGS,
                p,
                Duration::from_secs(10),
            )
            .unwrap()
            .1
        })
        .sum();
    assert_eq!(stored, sent_ratings as i64, "each rating stored once");

    // Every rating applied exactly once: the learner numbers the states it
    // publishes, one per rating, so its last number must equal the ratings
    // sent (a lost rating leaves it short, a repeated one takes it past).
    // Read from its own snapshot: reading the whole model topic back from
    // the mock cluster takes minutes on a long run.
    let deadline = std::time::Instant::now() + LONG;
    let mut round = 0;
    let last_seq = loop {
        round += 1;
        supervise(
            &mut learner,
            &mut supervised,
            format!("learner-supervised-end-{round}"),
        );
        let seq = snapshot_sequence(&snapshots.join("latest.rsm"));
        if seq.is_some_and(|s| s >= sent_ratings as u64) || std::time::Instant::now() >= deadline {
            break seq.unwrap_or(0);
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!(
        "fault suite: last sequence {last_seq} for {sent_ratings} ratings; the learner stopped by itself and was restarted {supervised} time(s), the workers {workers_supervised} time(s)"
    );
    assert_eq!(
        last_seq,
        sent_ratings as u64,
        "each rating applied once: no gap, no repeat\n{}",
        learner.log_text()
    );

    // Every worker serves what a fresh replay serves: a new worker started
    // from the latest snapshot, in its own group on the probe topics.
    let fresh_model = start_model(&batch, &snapshots);
    let fresh = Worker::start(
        &bootstrap,
        &fresh_model,
        "fresh",
        logs,
        "fresh",
        &["--input-topic", "probe-in", "--output-topic", "probe-out"],
    );
    for (i, worker) in workers.iter_mut().enumerate() {
        // Still supervised: a worker the embedded broker left behind stops,
        // and its restart from the latest snapshot catches up.
        let deadline = std::time::Instant::now() + LONG;
        let mut round = 0;
        let caught_up = loop {
            let seq = wait_metric(
                &worker.metrics,
                "recstream_model_update_sequence",
                Duration::from_secs(2),
                |s| s == last_seq as f64,
            );
            if seq == Some(last_seq as f64) || std::time::Instant::now() >= deadline {
                break seq;
            }
            round += 1;
            let name = format!("{}-supervised-end-{round}", ["a", "b"][i]);
            supervise_worker(worker, &mut workers_supervised, name);
        };
        assert_eq!(
            caught_up,
            Some(last_seq as f64),
            "{}\n--- learner ---\n{}",
            worker.log_text(),
            learner.log_text()
        );
    }
    {
        let worker = &fresh;
        let caught_up = wait_metric(
            &worker.metrics,
            "recstream_model_update_sequence",
            LONG,
            |s| s == last_seq as f64,
        );
        assert_eq!(
            caught_up,
            Some(last_seq as f64),
            "{}\n--- learner ---\n{}",
            worker.log_text(),
            learner.log_text()
        );
    }
    let probes: Vec<Vec<u8>> = (1..=60)
        .map(|u| format!(r#"{{"uid": {u}, "request_id": "probe-{u}"}}"#).into_bytes())
        .collect();
    produce(&bootstrap, IN, &probes);
    produce(&bootstrap, "probe-in", &probes);
    let is_probe = |x: &Value| {
        x["request_id"]
            .as_str()
            .is_some_and(|i| i.starts_with("probe-"))
    };
    let by_id = |topic: &str| -> BTreeMap<String, Value> {
        // Counted as the replies arrive: recounting every reply read so far
        // after each one took longer than LONG once a 100-cycle soak had
        // written 58,000 replies, and the probes, last on the topic, were
        // never reached.
        let (mut counted, mut probes) = (0, 0);
        read_topic(&bootstrap, topic, LONG, |r| {
            probes += r[counted..].iter().filter(|x| is_probe(x)).count();
            counted = r.len();
            probes >= 60
        })
        .into_iter()
        .filter(|r| is_probe(r))
        .map(|r| {
            (
                r["request_id"].as_str().unwrap().to_string(),
                r["recommendations"].clone(),
            )
        })
        .collect()
    };
    let (served, replayed) = (by_id(OUT), by_id("probe-out"));
    // Say why when a probe goes unanswered: what each worker owned and
    // logged last.
    assert_eq!(
        (served.len(), replayed.len()),
        (60, 60),
        "probes answered by the surviving workers and by the fresh one; {}",
        workers_report(&workers, &[("fresh", &fresh)]),
    );
    assert_eq!(
        served, replayed,
        "the workers serve exactly what a fresh replay serves"
    );

    // Memory bounded.
    for ((role, pid), warm) in pids.iter().zip(warm) {
        let Some(now) = rss_kib(*pid) else {
            eprintln!("fault suite: {role} {pid} was restarted after warm-up; not measured");
            continue;
        };
        eprintln!("fault suite: {role} {pid} RSS {warm} KiB warm, {now} KiB at the end");
        assert!(
            now as f64 <= warm as f64 * 1.2,
            "{role} grew from {warm} to {now} KiB"
        );
    }
}

#[test]
fn a_model_topic_that_outgrew_the_embedded_broker_never_makes_a_worker_diverge() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path();
    // librdkafka's mock cluster, which keeps 5 MiB a partition, so that the
    // model topic outgrows it within the test, and which has the
    // transactions the exactly-once worker below needs (recstream-broker
    // has none yet).
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [
        (IN, 1),
        (DLQ, 1),
        ("out-live", 1),
        ("out-late", 1),
        // One partition throughout, so that one partition of the model
        // topic outgrows what the embedded broker keeps.
        (RATINGS, 1),
        (RATINGS_DLQ, 1),
        (MODEL_TOPIC, 1),
        (DELTAS_TOPIC, 1),
        (FILES_TOPIC, 1),
    ] {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    let batch = synthetic_model(dir.path());
    let snapshots = dir.path().join("snapshots");
    let learner = Learner::start(&bootstrap, &batch, &snapshots, logs, "learner");
    assert!(learner.wait_learning(LONG), "{}", learner.log_text());
    // One worker follows from the start, live.
    let live = Worker::start(
        &bootstrap,
        &batch,
        "live",
        logs,
        "live",
        &["--output-topic", "out-live"],
    );
    assert!(live.wait_assigned(LONG), "{}", live.log_text());
    // 12,000 ratings: 12,000 user states and the merged item states, well
    // over the 5 MiB a partition the embedded broker keeps.
    const RATINGS_SENT: usize = 12_000;
    for chunk in 0..(RATINGS_SENT / 1000) {
        let batch: Vec<Vec<u8>> = (chunk * 1000..(chunk + 1) * 1000).map(rating).collect();
        produce(&bootstrap, RATINGS, &batch);
    }
    let settled = wait_metric(
        &live.metrics,
        "recstream_model_update_sequence",
        LONG,
        |s| s == RATINGS_SENT as f64,
    );
    assert_eq!(
        settled,
        Some(RATINGS_SENT as f64),
        "the live worker kept up\n{}",
        live.log_text()
    );
    let consumer: rdkafka::consumer::BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let (earliest, _) = rdkafka::consumer::Consumer::fetch_watermarks(
        &consumer,
        MODEL_TOPIC,
        0,
        Duration::from_secs(10),
    )
    .unwrap();
    assert!(
        earliest > 0,
        "the premise: the broker dropped the head of the model topic"
    );

    // A worker starting from the batch model would miss the dropped states:
    // it stops by itself, saying so, instead of serving a different model.
    // The same in exactly-once mode, whose model follower runs beside the
    // transactional loop (it used to be left running there, unheard).
    let batch_path = batch.to_string_lossy().to_string();
    for extra in [
        &[][..],
        &["--exactly-once", "--transactional-id", "stale-eos"][..],
    ] {
        let group = format!("stale{}", extra.len());
        let mut args = vec![
            "serve",
            "--brokers",
            &bootstrap,
            "--model",
            &batch_path,
            "--group-id",
            &group,
            "--output-topic",
            "out-late",
        ];
        args.extend_from_slice(extra);
        let (status, stderr, took) = run_to_end(&args, Duration::from_secs(60));
        assert!(
            status.code().is_some_and(|c| c != 0) && took < Duration::from_secs(55),
            "{extra:?}: stopped by itself, with an error ({status}, {took:?}): {stderr}"
        );
        assert!(
            stderr.contains("no longer holds the updates this worker needs"),
            "{extra:?}: {stderr}"
        );
    }

    // One started from the learner's latest snapshot converges to the live one.
    let deadline = std::time::Instant::now() + LONG;
    while !std::fs::read(snapshots.join("latest.rsm")).is_ok_and(|_| {
        learner
            .log_text()
            .lines()
            .rev()
            .find(|l| l.contains("snapshot written"))
            .is_some_and(|l| l.contains(&format!("+{RATINGS_SENT} ")))
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "a snapshot of every rating\n{}",
            learner.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let late = Worker::start(
        &bootstrap,
        &snapshots.join("latest.rsm"),
        "late",
        logs,
        "late",
        &["--output-topic", "out-late"],
    );
    assert!(late.wait_assigned(LONG), "{}", late.log_text());
    let caught_up = wait_metric(
        &late.metrics,
        "recstream_model_update_sequence",
        LONG,
        |s| s == RATINGS_SENT as f64,
    );
    assert_eq!(caught_up, Some(RATINGS_SENT as f64), "{}", late.log_text());
    let probes: Vec<Vec<u8>> = (1..=60)
        .map(|u| format!(r#"{{"uid": {u}, "request_id": "probe-{u}"}}"#).into_bytes())
        .collect();
    produce(&bootstrap, IN, &probes);
    let by_id = |topic: &str| -> BTreeMap<String, Value> {
        read_topic(&bootstrap, topic, LONG, |r| r.len() >= 60)
            .into_iter()
            .map(|r| {
                (
                    r["request_id"].as_str().unwrap_or_default().to_string(),
                    r["recommendations"].clone(),
                )
            })
            .collect()
    };
    let (live_replies, late_replies) = (by_id("out-live"), by_id("out-late"));
    assert_eq!(live_replies.len(), 60);
    assert_eq!(
        live_replies, late_replies,
        "the late worker serves exactly what the live one does"
    );
}
