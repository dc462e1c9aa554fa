//! Several `recstream learn` processes learning one model: the ratings
//! partitions split between them by their consumer group, item changes
//! merged from all of them, and every rating applied exactly once across a
//! kill -9, a restart from a snapshot and a learner joining mid-stream,
//! and across a retrained batch model, after which the learners learn
//! again, on top of it, exactly the ratings it does not hold.
//!
//! A learner joining runs through a Tansu broker process. The kill -9 runs
//! on librdkafka's mock cluster (the embedded broker): Tansu 0.6 keeps a
//! member that died in its group's assignments after its session expired,
//! so the survivor never gets the dead one's partitions there (the same
//! reason the workers' kill test runs on the mock).

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::mocking::MockCluster;
use serde_json::Value;
use support::*;

const LONG: Duration = Duration::from_secs(120);
/// Ratings sent in a run, at [`RATE`] a second.
const RATINGS_SENT: usize = 8_000;
const RATE: usize = 1_000;
/// Users who rate; every one is asked for recommendations at the end.
const USERS: usize = 200;
/// Items not in the batch model, rated by users of every partition.
const NEW_ITEMS: usize = 20;

/// A broker process, or the mock cluster in this process.
enum Broker {
    Tansu(#[allow(dead_code)] Tansu),
    Mock(#[allow(dead_code)] MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
}

struct Group {
    bootstrap: String,
    /// Arguments every learner gets.
    learner_args: Vec<&'static str>,
    _broker: Broker,
    dir: tempfile::TempDir,
    model: PathBuf,
    learners: BTreeMap<&'static str, Learner>,
    workers: Vec<Worker>,
}

/// Every topic of the online loop, four partitions each, and a reply
/// topic per worker.
const TOPICS: [(&str, i32); 10] = [
    (IN, 4),
    (OUT, 4),
    (DLQ, 4),
    (RATINGS, 4),
    (RATINGS_DLQ, 4),
    (MODEL_TOPIC, 4),
    (DELTAS_TOPIC, 4),
    (FILES_TOPIC, 1),
    ("replies-a", 4),
    ("replies-b", 4),
];

/// Two workers on a Tansu broker process.
fn on_tansu() -> Option<Group> {
    let binary = tansu_binary()?;
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(&binary, dir.path());
    broker.create_online_topics();
    broker.create(&[("replies-a", 4), ("replies-b", 4)]);
    let mut group = with_workers(broker.bootstrap.clone(), Broker::Tansu(broker), dir);
    // A learner taking a partition over reads item deltas from inside the
    // partition, which Tansu 0.6 serves correctly only at batch boundaries.
    group.learner_args = vec!["--kafka", "batch.num.messages=1"];
    Some(group)
}

/// Two workers and two learners, two partitions each, on the mock cluster.
fn two_learners_on_mock() -> Group {
    let mut g = on_mock();
    g.learner("a");
    g.learner("b");
    g.wait_owning("a", 2.0);
    g.wait_owning("b", 2.0);
    g
}

/// Two workers on the mock cluster.
fn on_mock() -> Group {
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in TOPICS {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    with_workers(cluster.bootstrap_servers(), Broker::Mock(cluster), dir)
}

fn with_workers(bootstrap: String, broker: Broker, dir: tempfile::TempDir) -> Group {
    let model = synthetic_model(dir.path());
    let mut group = Group {
        bootstrap,
        learner_args: Vec::new(),
        _broker: broker,
        dir,
        model,
        learners: BTreeMap::new(),
        workers: Vec::new(),
    };
    for (name, output) in [("a", "replies-a"), ("b", "replies-b")] {
        let worker = Worker::start(
            &group.bootstrap,
            &group.model,
            &format!("g-{name}"),
            group.dir.path(),
            &format!("worker-{name}"),
            &["--output-topic", output],
        );
        assert!(worker.wait_assigned(LONG), "worker {name} joined");
        group.workers.push(worker);
    }
    group
}

impl Group {
    /// Starts learner `name`, with a snapshot folder of its own (learners
    /// run on different machines), and waits until it owns a partition.
    fn learner(&mut self, name: &'static str) {
        let learner = Learner::start_with(
            &self.bootstrap,
            &self.model,
            &self.dir.path().join(format!("snapshots-{name}")),
            self.dir.path(),
            &format!("learner-{name}"),
            &self.learner_args,
        );
        assert!(
            learner.wait_learning(LONG),
            "learner {name} owns a partition\n{}",
            self.logs()
        );
        self.learners.insert(name, learner);
    }

    fn logs(&self) -> String {
        let learners = self.learners.values().map(Learner::log_text);
        let workers = self.workers.iter().map(Worker::log_text);
        learners.chain(workers).collect::<Vec<_>>().join("\n---\n")
    }

    /// Waits until learner `name` owns `partitions` ratings partitions.
    fn wait_owning(&self, name: &str, partitions: f64) {
        let deadline = Instant::now() + LONG;
        while self.learners[name].assigned_partitions() != Some(partitions) {
            assert!(
                Instant::now() < deadline,
                "learner {name} took {partitions} partitions\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until the learners have learnt `ratings` together.
    fn wait_learnt_together(&self, ratings: f64) {
        let deadline = Instant::now() + LONG;
        while self
            .learners
            .keys()
            .map(|name| self.learnt(name))
            .sum::<f64>()
            < ratings
        {
            assert!(Instant::now() < deadline, "learners learn\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Ratings learner `name` has learnt, from its metrics.
    fn learnt(&self, name: &str) -> f64 {
        let (_, text) = http_get(&self.learners[name].metrics, "/metrics").unwrap_or_default();
        metric(&text, "recstream_ratings_learnt_total").unwrap_or(0.0)
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.workers.clear();
        self.learners.clear();
    }
}

/// Rating `i`: users 1..=200, mostly items of the batch model, every tenth
/// one of the new items (rated by many users, so from every partition).
fn rating(i: usize) -> Vec<u8> {
    let uid = 1 + (i + 3 * (i / 10)) % USERS;
    let iid = if i.is_multiple_of(10) {
        format!(r#""n{}""#, (i / 10) % NEW_ITEMS)
    } else {
        (1 + (i * 13) % 390).to_string()
    };
    format!(r#"{{"uid": {uid}, "iid": {iid}, "rating": {}}}"#, 1 + i % 5).into_bytes()
}

/// Sends every rating, keyed by uid, at [`RATE`] a second.
fn send_ratings(bootstrap: &str) -> std::thread::JoinHandle<()> {
    let bootstrap = bootstrap.to_string();
    std::thread::spawn(move || {
        let per_chunk = RATE / 10;
        for chunk in 0..RATINGS_SENT / per_chunk {
            let batch: Vec<Vec<u8>> = (chunk * per_chunk..(chunk + 1) * per_chunk)
                .map(rating)
                .collect();
            // Learners resume inside the ratings partitions, which Tansu
            // serves correctly only at batch boundaries.
            produce_one_per_batch(&bootstrap, RATINGS, &batch);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Waits until each worker has applied as many user states as ratings
/// were sent; the end of each ratings partition, which together hold
/// exactly the ratings sent.
fn workers_caught_up(g: &Group) -> Vec<i64> {
    for worker in &g.workers {
        assert!(
            worker.wait_learnt(RATINGS_SENT as u64, LONG),
            "the workers applied a state for every rating\n{}",
            g.logs()
        );
    }
    let ratings_end = end_offsets(&g.bootstrap, RATINGS, 4);
    assert_eq!(
        ratings_end.iter().sum::<i64>(),
        RATINGS_SENT as i64,
        "the premise: the ratings topic holds exactly the ratings sent"
    );
    ratings_end
}

/// Every check of a run, once all ratings are sent.
fn every_rating_applied_once_and_workers_agree(g: &Group) {
    let ratings_end = workers_caught_up(g);
    let model_end: i64 = end_offsets(&g.bootstrap, MODEL_TOPIC, 4).iter().sum();
    let updates = read_topic(&g.bootstrap, MODEL_TOPIC, LONG, |m| {
        m.len() as i64 >= model_end
    });

    // Users: per partition, one state per rating, numbered 1, 2, ... with
    // no gap and no repeat.
    let mut sources: BTreeMap<i64, Vec<(i64, u64)>> = BTreeMap::new();
    for user in updates.iter().filter(|m| m["type"] == "user") {
        let source = &user["source"];
        sources
            .entry(source["partition"].as_i64().unwrap())
            .or_default()
            .push((
                source["offset"].as_i64().unwrap(),
                user["seq"].as_u64().unwrap(),
            ));
    }
    for (partition, end) in ratings_end.iter().enumerate() {
        let states = sources
            .get(&(partition as i64))
            .cloned()
            .unwrap_or_default();
        let offsets: BTreeSet<i64> = states.iter().map(|&(o, _)| o).collect();
        assert_eq!(
            offsets,
            (0..*end).collect(),
            "every rating of partition {partition} learnt\n{}",
            g.logs()
        );
        let seqs: Vec<u64> = states.iter().map(|&(_, s)| s).collect();
        assert_eq!(
            seqs,
            (1..=*end as u64).collect::<Vec<_>>(),
            "partition {partition}: each rating learnt once, in order\n{}",
            g.logs()
        );
    }

    // New items: the merged count is the number of ratings, with a
    // contribution from every partition whose users rated it.
    let mut rated_from: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for user in updates.iter().filter(|m| m["type"] == "user") {
        if let Some(id) = user["item_delta"]["id"].as_str() {
            rated_from
                .entry(id.to_string())
                .or_default()
                .insert(user["source"]["partition"].as_i64().unwrap());
        }
    }
    let mut latest: BTreeMap<String, &Value> = BTreeMap::new();
    for item in updates.iter().filter(|m| m["type"] == "item") {
        if let Some(id) = item["state"]["id"].as_str() {
            latest.insert(id.to_string(), item);
        }
    }
    for n in 0..NEW_ITEMS {
        let id = format!("n{n}");
        let sent = (0..RATINGS_SENT)
            .filter(|i| i.is_multiple_of(10) && (i / 10) % NEW_ITEMS == n)
            .count() as u64;
        let item = latest
            .get(&id)
            .unwrap_or_else(|| panic!("{id} merged\n{}", g.logs()));
        assert_eq!(
            item["state"]["count"].as_u64(),
            Some(sent),
            "{id}: every rating's change merged once\n{}",
            g.logs()
        );
        let through: BTreeSet<i64> = item["through"]
            .as_array()
            .unwrap()
            .iter()
            .map(|pair| pair[0].as_i64().unwrap())
            .collect();
        assert_eq!(
            Some(&through),
            rated_from.get(&id),
            "{id}: a contribution from each partition that rated it"
        );
        assert!(
            through.len() >= 2,
            "{id} was rated through several learners"
        );
    }

    workers_agree(g, "");
}

/// Waits until both workers answer every user from one version of the
/// batch model `model` (any, when empty), with identical recommendations
/// and scores; the version.
fn workers_agree(g: &Group, model: &str) -> String {
    let ask_everyone = |output: &str, prefix: &str| -> BTreeMap<String, Value> {
        produce(&g.bootstrap, IN, &requests(prefix, USERS, USERS));
        let mine = |r: &Value| {
            r["request_id"]
                .as_str()
                .is_some_and(|id| id.starts_with(prefix))
        };
        read_topic(&g.bootstrap, output, LONG, |r| {
            r.iter().filter(|x| mine(x)).count() >= USERS
        })
        .into_iter()
        .filter(mine)
        .map(|r| (r["request_id"].as_str().unwrap().to_string(), r))
        .collect()
    };
    // Item states are merged shortly after their ratings: ask until both
    // workers answer from one version that no longer changes.
    let deadline = Instant::now() + LONG;
    let mut round = 0;
    loop {
        round += 1;
        let a = ask_everyone("replies-a", &format!("a{round}-"));
        let b = ask_everyone("replies-b", &format!("b{round}-"));
        let versions: BTreeSet<&str> = a
            .values()
            .chain(b.values())
            .filter_map(|r| r["model_version"].as_str())
            .collect();
        let recommendations = |replies: &BTreeMap<String, Value>| -> Vec<Value> {
            replies
                .values()
                .map(|r| r["recommendations"].clone())
                .collect()
        };
        let settled = match versions.iter().collect::<Vec<_>>()[..] {
            [version] if version.starts_with(model) => Some(version),
            _ => None,
        };
        if let Some(version) = settled {
            let (a, b) = (recommendations(&a), recommendations(&b));
            assert_eq!(a.len(), USERS);
            assert!(
                a == b,
                "identical recommendations and scores from both workers\n{}",
                g.logs()
            );
            return version.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the workers settle on one version: {versions:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn a_learner_killed_under_load_hands_its_partitions_over_and_restarts_from_its_snapshot() {
    let _serial = serial();
    let mut g = two_learners_on_mock();
    let sender = send_ratings(&g.bootstrap);
    let deadline = Instant::now() + LONG;
    while g.learnt("a") < 500.0 {
        assert!(Instant::now() < deadline, "learner a learns\n{}", g.logs());
        std::thread::sleep(Duration::from_millis(50));
    }
    g.learners.get_mut("a").unwrap().kill_9();
    assert!(
        !sender.is_finished(),
        "the premise: ratings were still arriving at the kill"
    );
    g.wait_owning("b", 4.0);
    // Learner a comes back from its own snapshot and takes partitions again.
    g.learner("a");
    assert!(
        g.learners["a"]
            .log_text()
            .contains("resuming from snapshot"),
        "the premise: the restart read its snapshot"
    );
    g.wait_owning("b", 2.0);
    sender.join().unwrap();
    every_rating_applied_once_and_workers_agree(&g);
}

#[test]
fn a_third_learner_joining_mid_stream_takes_partitions_and_loses_nothing() {
    let _serial = serial();
    let Some(mut g) = on_tansu() else { return };
    g.learner("a");
    g.learner("b");
    g.wait_owning("a", 2.0);
    let sender = send_ratings(&g.bootstrap);
    g.wait_learnt_together(2_000.0);
    g.learner("c");
    assert!(
        !sender.is_finished(),
        "the premise: ratings were still arriving when the third joined"
    );
    let deadline = Instant::now() + LONG;
    loop {
        let owned: Vec<f64> = ["a", "b", "c"]
            .iter()
            .map(|name| g.learners[*name].assigned_partitions().unwrap_or(0.0))
            .collect();
        if owned.iter().sum::<f64>() == 4.0 && owned.iter().all(|&n| n >= 1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the three share the four partitions: {owned:?}\n{}",
            g.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    sender.join().unwrap();
    every_rating_applied_once_and_workers_agree(&g);
}

#[test]
fn a_model_topic_partitioned_unlike_the_ratings_is_refused_with_a_clear_message() {
    let _serial = serial();
    let Some(binary) = tansu_binary() else { return };
    let dir = tempfile::tempdir().unwrap();
    let broker = Tansu::start(&binary, dir.path());
    broker.create(&[(RATINGS, 4), (RATINGS_DLQ, 4), (DELTAS_TOPIC, 4)]);
    broker.create_with(&[
        (MODEL_TOPIC, 1, &[("cleanup.policy", "compact")]),
        (FILES_TOPIC, 1, &[]),
    ]);
    let model = synthetic_model(dir.path());
    let model = model.to_string_lossy();
    let snapshots = dir.path().join("snapshots");
    let (status, stderr, _) = run_to_end(
        &[
            "learn",
            "--brokers",
            &broker.bootstrap,
            "--model",
            &model,
            "--snapshot-dir",
            &snapshots.to_string_lossy(),
        ],
        LONG,
    );
    assert!(!status.success(), "refused\n{stderr}");
    assert!(
        stderr.contains(r#""model-updates" has 1 partition(s) but "rating-events" has 4"#),
        "says what was found\n{stderr}"
    );
    assert!(
        stderr.contains("recreate \"model-updates\" with 4 partitions"),
        "says how to fix it\n{stderr}"
    );
}

/// Runs `recstream retrain` once on the group's base ratings, with the
/// hyper-parameters of the group's batch model; its stdout.
fn retrain(g: &Group, out: &str) -> String {
    let dir = g.dir.path();
    let output = std::process::Command::new(recstream_binary())
        .args(["retrain", "--brokers", &g.bootstrap])
        .args(["--seed", "1", "--n-factors", "16", "--n-epochs", "5"])
        .arg("--ratings")
        .arg(dir.join("ratings.tsv"))
        .arg("--out")
        .arg(dir.join(out))
        .arg("--archive")
        .arg(dir.join("archive"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "retrain succeeded\n{stderr}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The archive's recorded positions: per partition, the first rating not in.
fn archived_positions(g: &Group) -> Vec<i64> {
    let text = std::fs::read_to_string(g.dir.path().join("archive/positions.json")).unwrap();
    let positions: Value = serde_json::from_str(&text).unwrap();
    let next: BTreeMap<i64, i64> = positions["next"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(p, offset)| (p.parse().unwrap(), offset.as_i64().unwrap()))
        .collect();
    (0..4).map(|p| next.get(&p).copied().unwrap_or(0)).collect()
}

/// A model file's id and rating count, from `recstream model info --json`.
fn model_info(path: &std::path::Path) -> (String, u64) {
    let output = std::process::Command::new(recstream_binary())
        .args(["model", "info", "--json"])
        .arg(path)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        info["model_id"].as_str().unwrap().to_string(),
        info["meta"]["n_ratings"].as_u64().unwrap(),
    )
}

#[test]
fn a_retrain_under_load_holds_the_ratings_so_far_and_learners_relearn_only_the_rest_across_a_kill()
{
    let _serial = serial();
    let mut g = two_learners_on_mock();
    let base_ratings = std::fs::read_to_string(g.dir.path().join("ratings.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count() as u64;
    let sender = send_ratings(&g.bootstrap);
    g.wait_learnt_together(2_000.0);
    let said = retrain(&g, "retrained.rsm");
    assert!(
        !sender.is_finished(),
        "the premise: ratings were still arriving when the retrained model was published"
    );
    let covered = archived_positions(&g);
    let (retrained, held) = model_info(&g.dir.path().join("retrained.rsm"));
    assert_eq!(
        held,
        base_ratings + covered.iter().sum::<i64>() as u64,
        "the retrained model holds the base file and every rating up to the recorded ends\n{said}"
    );
    assert!(said.contains(&retrained), "{said}");
    // A learner dies around the switch, and comes back from its snapshot.
    g.learners.get_mut("b").unwrap().kill_9();
    assert!(
        !sender.is_finished(),
        "the premise: ratings were still arriving at the kill"
    );
    g.wait_owning("a", 4.0);
    g.learner("b");
    g.wait_owning("a", 2.0);
    sender.join().unwrap();

    // Per partition, the ratings after the recorded end are learnt on the
    // new model, each exactly once; none before it.
    let ratings_end = workers_caught_up(&g);
    let deadline = Instant::now() + LONG;
    let (on_new, relearnt) = loop {
        let model_end: i64 = end_offsets(&g.bootstrap, MODEL_TOPIC, 4).iter().sum();
        let updates = read_topic(&g.bootstrap, MODEL_TOPIC, LONG, |m| {
            m.len() as i64 >= model_end
        });
        let users = updates.iter().filter(|m| m["type"] == "user");
        let mut on_new: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        let mut relearnt = 0;
        for user in users {
            let (p, offset) = (
                user["source"]["partition"].as_i64().unwrap(),
                user["source"]["offset"].as_i64().unwrap(),
            );
            if user["base"] == retrained.as_str() {
                on_new.entry(p).or_default().push(offset);
            } else if offset >= covered[p as usize] {
                // Learnt on the old model before the switch: the premise
                // that some ratings are learnt again.
                relearnt += 1;
            }
        }
        let learnt_all = (0..4usize).all(|p| {
            let learnt = on_new.get(&(p as i64)).map_or(0, Vec::len) as i64;
            learnt >= ratings_end[p] - covered[p]
        });
        if learnt_all {
            break (on_new, relearnt);
        }
        assert!(
            Instant::now() < deadline,
            "the learners learn every rating after the recorded ends on the new model\n{}",
            g.logs()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    for p in 0..4usize {
        let mut offsets = on_new.get(&(p as i64)).cloned().unwrap_or_default();
        offsets.sort_unstable();
        assert_eq!(
            offsets,
            (covered[p]..ratings_end[p]).collect::<Vec<_>>(),
            "partition {p}: each rating after {} learnt once on the new model\n{}",
            covered[p],
            g.logs()
        );
    }
    assert!(
        relearnt > 0,
        "the premise: ratings after the recorded ends had been learnt on the old model"
    );
    let version = workers_agree(&g, &retrained);
    assert!(
        version.starts_with(&format!("{retrained}+")),
        "the workers serve the retrained model: {version}"
    );

    // A second retrain reads only the ratings the archive does not have.
    let said = retrain(&g, "retrained-2.rsm");
    assert!(
        said.contains(&format!(
            "{} read from",
            RATINGS_SENT as i64 - covered.iter().sum::<i64>()
        )),
        "{said}"
    );
    assert_eq!(archived_positions(&g), ratings_end);
    let (second, held) = model_info(&g.dir.path().join("retrained-2.rsm"));
    assert_eq!(held, base_ratings + RATINGS_SENT as u64);
    let version = workers_agree(&g, &second);
    assert!(
        version.starts_with(&format!("{second}+")),
        "the workers serve the second retrained model: {version}"
    );
}

#[test]
fn a_scheduled_retrain_runs_every_interval_reads_only_new_ratings_and_stops_on_sigterm() {
    use std::io::BufRead;
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let cluster = MockCluster::new(1).expect("mock cluster");
    for (topic, partitions) in [(RATINGS, 4), (MODEL_TOPIC, 4), (FILES_TOPIC, 1)] {
        cluster.create_topic(topic, partitions, 1).unwrap();
    }
    let bootstrap = cluster.bootstrap_servers();
    synthetic_model(dir.path());
    let mut ratings: Vec<Vec<u8>> = (0..100).map(rating).collect();
    ratings.push(b"not json".to_vec());
    produce(&bootstrap, RATINGS, &ratings);
    let mut child = std::process::Command::new(recstream_binary())
        .args(["retrain", "--brokers", &bootstrap, "--every", "1s"])
        .args(["--n-factors", "4", "--n-epochs", "2"])
        .arg("--ratings")
        .arg(dir.path().join("ratings.tsv"))
        .arg("--out")
        .arg(dir.path().join("retrained.rsm"))
        .arg("--archive")
        .arg(dir.path().join("archive"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (lines, said) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("retrained model") && lines.send(line).is_err() {
                break;
            }
        }
    });
    let first = said.recv_timeout(LONG).expect("a first round");
    assert!(
        first.contains("101 read from rating-events this time (1 refused"),
        "{first}"
    );
    let second = said
        .recv_timeout(LONG)
        .expect("a second round, a second later");
    assert!(
        second.contains("0 read from rating-events this time"),
        "the second round reads only what is new: {second}"
    );
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let deadline = Instant::now() + LONG;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "retrain stops on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "a clean stop: {status}");
}
