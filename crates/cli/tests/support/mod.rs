//! Test support: a real Kafka-protocol broker process (Tansu), the
//! `recstream` binary as child processes, and helpers to produce requests and
//! read replies with an independent Kafka client.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use serde_json::Value;

pub const IN: &str = "quickstart-events";
pub const OUT: &str = "recommendation-events";
pub const DLQ: &str = "recommendation-events-dlq";
pub const RATINGS: &str = "rating-events";
pub const RATINGS_DLQ: &str = "rating-events-dlq";
pub const MODEL_TOPIC: &str = "model-updates";
pub const FILES_TOPIC: &str = "model-files";
pub const DELTAS_TOPIC: &str = "item-deltas";

/// A tool a test needs is missing: under CI (`CI` set, where `.ci/run` and
/// `scripts/test` install every tool) that fails the test; elsewhere the
/// test is skipped, said loudly. `why` says what is missing and how to get it.
pub fn missing_tool<T>(why: &str) -> Option<T> {
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("\n!!!!! SKIPPING: {why} !!!!!\n");
    None
}

/// The file `name` in a folder of `PATH`, if there is one.
pub fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The Python of the venv `bench/python/setup.sh` builds
/// (`${RECSTREAM_PY_VENV:-bench/python/.venv}`) if it imports `modules`
/// (for example `"numpy, surprise"`), or `None`, said loudly, outside CI;
/// under `CI=true` a missing venv fails the test.
pub fn bench_python(modules: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("RECSTREAM_PY_VENV")
        .map_or_else(|| PathBuf::from("bench/python/.venv"), PathBuf::from);
    let venv = if venv.is_absolute() {
        venv
    } else {
        repo_root().join(venv)
    };
    let python = venv.join("bin/python");
    let works = Command::new(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(python);
    }
    missing_tool(&format!(
        "no Python with {modules} at {} (run bash bench/python/setup.sh, or set RECSTREAM_PY_VENV)",
        python.display()
    ))
}

/// Broker-backed tests run one at a time: each starts a broker and workers,
/// and two cores do not run several such setups reliably at once.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The `tansu` binary, or `None` (after saying so loudly) outside CI.
pub fn tansu_binary() -> Option<PathBuf> {
    let in_cargo_bin = [
        std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin/tansu")),
        std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/tansu")),
    ];
    on_path("tansu")
        .or_else(|| in_cargo_bin.into_iter().flatten().find(|c| c.is_file()))
        .or_else(|| {
            missing_tool(
                "the tansu broker is not installed; scripts/test installs it (cargo install tansu --locked --features dynostore)",
            )
        })
}

/// A free TCP port on loopback, never one this test process handed out
/// before: the kernel may give the same ephemeral port to two binds in a
/// row once the first listener is closed, and two servers told to use it
/// would then race for it (a learner and a worker did, and the worker's
/// readiness check passed on the learner's `/readyz`).
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local address").port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// A Tansu broker process on a loopback port, in-memory storage; killed on drop.
pub struct Tansu {
    child: Child,
    pub bootstrap: String,
}

impl Tansu {
    pub fn start(binary: &Path, logs: &Path) -> Tansu {
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(logs.join("tansu.log")).expect("tansu log");
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu {
            child,
            bootstrap: format!("127.0.0.1:{port}"),
        }
    }

    /// Creates the request, reply and dead-letter topics with `partitions`
    /// partitions, and the model topics every `serve` follows by default.
    pub fn create_topics(&self, partitions: i32) {
        self.create(&[(IN, partitions), (OUT, partitions), (DLQ, partitions)]);
        self.create_model_topics(partitions);
    }

    /// Creates the request, reply, rating and model topics of the online
    /// loop, four partitions each.
    pub fn create_online_topics(&self) {
        self.create(&[(IN, 4), (OUT, 4), (DLQ, 4), (RATINGS, 4), (RATINGS_DLQ, 4)]);
        self.create_model_topics(4);
    }

    /// The compacted model topic and the item-deltas topic, partitioned like
    /// a ratings topic of `partitions` partitions, and the files topic.
    pub fn create_model_topics(&self, partitions: i32) {
        self.create_with(&[
            (MODEL_TOPIC, partitions, &[("cleanup.policy", "compact")]),
            (DELTAS_TOPIC, partitions, &[]),
            (FILES_TOPIC, 1, &[]),
        ]);
    }

    pub fn create(&self, specs: &[(&str, i32)]) {
        let specs: Vec<TopicToCreate<'_>> = specs.iter().map(|&(t, p)| (t, p, &[][..])).collect();
        self.create_with(&specs);
    }

    /// Creates topics with partitions and topic configs.
    pub fn create_with(&self, specs: &[TopicToCreate<'_>]) {
        create_topics(&self.bootstrap, specs);
    }
}

/// A topic to create: name, partitions, topic configs.
pub type TopicToCreate<'a> = (&'a str, i32, &'a [(&'a str, &'a str)]);

/// Creates topics through the admin API of the broker at `bootstrap`.
pub fn create_topics(bootstrap: &str, specs: &[TopicToCreate<'_>]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic<'_>> = specs
        .iter()
        .map(|(t, p, configs)| {
            configs.iter().fold(
                NewTopic::new(t, *p, TopicReplication::Fixed(1)),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let results = runtime
        .block_on(admin.create_topics(
            &topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(20))),
        ))
        .expect("create topics");
    for result in results {
        result.expect("topic created");
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `recstream model publish` of `model` to the workers on `bootstrap`.
pub fn publish_model(bootstrap: &str, model: &Path) -> std::process::Output {
    Command::new(recstream_binary())
        .args(["model", "publish", "--brokers", bootstrap])
        .arg(model)
        .output()
        .expect("run recstream model publish")
}

pub fn recstream_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_recstream"))
}

/// Trains a small model on synthetic data with the real binary.
pub fn synthetic_model(dir: &Path) -> PathBuf {
    synthetic_model_named(dir, "model.rsm", 1)
}

/// As [`synthetic_model`], with a file name and training seed.
pub fn synthetic_model_named(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let ratings = dir.join("ratings.tsv");
    let model = dir.join(name);
    let seed = seed.to_string();
    let status = Command::new(recstream_binary())
        .args([
            "data",
            "synth",
            "--users",
            "500",
            "--items",
            "400",
            "--ratings",
            "20000",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&ratings)
        .stdout(Stdio::null())
        .status()
        .expect("synth");
    assert!(status.success());
    let status = Command::new(recstream_binary())
        .args([
            "train",
            "--quiet",
            "--seed",
            &seed,
            "--n-factors",
            "16",
            "--n-epochs",
            "5",
            "--ratings",
        ])
        .arg(&ratings)
        .arg("--out")
        .arg(&model)
        .status()
        .expect("train");
    assert!(status.success());
    model
}

/// A `recstream serve` process; killed (SIGKILL) on drop if still running.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
    /// Its metrics and health endpoint, `127.0.0.1:PORT`.
    pub metrics: String,
}

/// Consumer settings that make group membership quick to settle on Tansu.
pub const FAST_GROUP: [&str; 4] = [
    "--kafka",
    "session.timeout.ms=6000",
    "--kafka",
    "heartbeat.interval.ms=1000",
];

impl Worker {
    pub fn start(
        bootstrap: &str,
        model: &Path,
        group: &str,
        logs: &Path,
        name: &str,
        extra: &[&str],
    ) -> Worker {
        let mut command = Command::new(recstream_binary());
        command
            .args([
                "serve",
                "--brokers",
                bootstrap,
                "--group-id",
                group,
                "--model",
            ])
            .arg(model)
            .args(FAST_GROUP)
            .args(extra)
            .args(diagnostic_kafka_args())
            .env("RUST_LOG", diagnostic_log_filter());
        Worker::spawn(command, logs, name)
    }

    /// Starts `command` (a `recstream serve ...`) with its metrics on a free
    /// port and its log in `logs/<name>.log`.
    pub fn spawn(mut command: Command, logs: &Path, name: &str) -> Worker {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("worker log");
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = command
            .args(["--metrics-addr", &metrics])
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start recstream serve");
        Worker {
            child,
            log,
            metrics,
        }
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit; returns the status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status, started.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "worker did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Partitions the worker owns, from its `recstream_assigned_partitions` gauge.
    pub fn assigned_partitions(&self) -> Option<f64> {
        let (_, text) = http_get(&self.metrics, "/metrics")?;
        metric(&text, "recstream_assigned_partitions")
    }

    /// Ratings learnt, over every partition, in the updates the worker applied.
    pub fn model_sequence(&self) -> Option<f64> {
        let (_, text) = http_get(&self.metrics, "/metrics")?;
        metric(&text, "recstream_model_update_sequence")
    }

    /// Waits until the worker has applied the updates of `ratings` ratings.
    pub fn wait_learnt(&self, ratings: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.model_sequence().is_some_and(|n| n >= ratings as f64) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Waits until the worker owns at least one partition (its gauge says so).
    pub fn wait_assigned(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.assigned_partitions().is_some_and(|n| n > 0.0) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A `recstream learn` process; killed (SIGKILL) on drop if still running.
pub struct Learner {
    pub child: Child,
    pub log: PathBuf,
    /// Its metrics and health endpoint, `127.0.0.1:PORT`.
    pub metrics: String,
}

impl Learner {
    pub fn start(
        bootstrap: &str,
        model: &Path,
        snapshots: &Path,
        logs: &Path,
        name: &str,
    ) -> Learner {
        Learner::start_with(bootstrap, model, snapshots, logs, name, &[])
    }

    /// As [`Learner::start`], with more arguments.
    pub fn start_with(
        bootstrap: &str,
        model: &Path,
        snapshots: &Path,
        logs: &Path,
        name: &str,
        extra: &[&str],
    ) -> Learner {
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).expect("learner log");
        let metrics = format!("127.0.0.1:{}", free_port());
        let child = Command::new(recstream_binary())
            .args([
                "learn",
                "--brokers",
                bootstrap,
                "--snapshot-every",
                "2",
                "--metrics-addr",
                &metrics,
                "--model",
            ])
            .arg(model)
            .arg("--snapshot-dir")
            .arg(snapshots)
            .args(FAST_GROUP)
            .args(extra)
            .env("RUST_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start recstream learn");
        Learner {
            child,
            log,
            metrics,
        }
    }

    pub fn kill_9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the learner has joined its group and owns (and has
    /// restored) at least one ratings partition.
    pub fn wait_learning(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        wait_ready(&self.metrics, timeout)
            && loop {
                if self.assigned_partitions().is_some_and(|n| n > 0.0) {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
    }

    /// Ratings partitions the learner owns and has restored.
    pub fn assigned_partitions(&self) -> Option<f64> {
        let (_, text) = http_get(&self.metrics, "/metrics")?;
        metric(&text, "recstream_learner_partitions")
    }
}

impl Drop for Learner {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Sends one request for 20 recommendations and waits for its reply on `output`.
pub fn ask(
    bootstrap: &str,
    output: &str,
    uid: &str,
    request_id: &str,
    timeout: Duration,
) -> Option<Value> {
    let uid_json = uid
        .parse::<u64>()
        .map_or_else(|_| format!("\"{uid}\""), |n| n.to_string());
    produce(
        bootstrap,
        IN,
        &[format!(r#"{{"uid": {uid_json}, "n": 20, "request_id": "{request_id}"}}"#).into_bytes()],
    );
    read_topic(bootstrap, output, timeout, |replies| {
        replies.iter().any(|r| r["request_id"] == request_id)
    })
    .into_iter()
    .find(|r| r["request_id"] == request_id)
}

/// Asks repeatedly until `done` holds for a reply (or the timeout passes).
pub fn ask_until(
    bootstrap: &str,
    output: &str,
    uid: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let deadline = Instant::now() + timeout;
    let mut attempt = 0;
    while Instant::now() < deadline {
        attempt += 1;
        let id = format!("until-{uid}-{attempt}-{}", unique());
        if let Some(reply) = ask(bootstrap, output, uid, &id, Duration::from_secs(20))
            && done(&reply)
        {
            return Some(reply);
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    None
}

/// A number that differs between calls (for request ids).
pub fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The item ids of a reply, as text.
pub fn recommended_ids(reply: &Value) -> Vec<String> {
    reply["recommendations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            r["iid"].as_i64().map_or_else(
                || r["iid"].as_str().unwrap_or_default().to_string(),
                |n| n.to_string(),
            )
        })
        .collect()
}

/// Produces requests `{"uid": U, "request_id": "<prefix>-<i>"}` (and any extra raw messages).
pub fn produce(bootstrap: &str, topic: &str, messages: &[Vec<u8>]) {
    produce_with(bootstrap, topic, messages, &[("linger.ms", "5")]);
}

/// The key a well-behaved producer gives a JSON event: its uid as text
/// (ratings must be keyed so; requests may be). `None` without a uid.
pub fn uid_key(payload: &[u8]) -> Option<String> {
    let event: Value = serde_json::from_slice(payload).ok()?;
    match &event["uid"] {
        Value::String(uid) => Some(uid.clone()),
        Value::Number(uid) => Some(uid.to_string()),
        _ => None,
    }
}

/// As [`produce`], but every message in a record batch of its own. For
/// topics that a consumer on Tansu resumes in mid-stream: Tansu 0.6 answers
/// a fetch from an offset inside a batch with the next batch, skipping the
/// rest of that one (Kafka returns the whole batch and the client drops
/// the records before the offset).
pub fn produce_one_per_batch(bootstrap: &str, topic: &str, messages: &[Vec<u8>]) {
    produce_with(
        bootstrap,
        topic,
        messages,
        &[("linger.ms", "0"), ("batch.num.messages", "1")],
    );
}

fn produce_with(bootstrap: &str, topic: &str, messages: &[Vec<u8>], settings: &[(&str, &str)]) {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", bootstrap);
    for (key, value) in settings {
        config.set(*key, *value);
    }
    let producer: FutureProducer = config.create().expect("producer");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let keys: Vec<String> = messages
            .iter()
            .enumerate()
            .map(|(i, m)| uid_key(m).unwrap_or_else(|| format!("k{}", i % 101)))
            .collect();
        let mut pending = Vec::with_capacity(messages.len());
        for (payload, key) in messages.iter().zip(&keys) {
            let record = FutureRecord::to(topic).key(key).payload(payload);
            pending.push(producer.send(record, Duration::from_secs(60)));
        }
        for result in futures::future::join_all(pending).await {
            result.expect("request delivered to the broker");
        }
    });
}

pub fn requests(prefix: &str, count: usize, users: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| {
            format!(
                r#"{{"uid": {}, "request_id": "{prefix}-{i}"}}"#,
                1 + i % users
            )
            .into_bytes()
        })
        .collect()
}

/// Steady request load on a thread while a test does something else:
/// `chunks` batches of `per_chunk` requests (ids `<prefix>-<n>`, users
/// `1..=users` within a batch), one batch every `pause`.
pub fn steady_load(
    bootstrap: &str,
    topic: &'static str,
    prefix: &'static str,
    shape: (usize, usize, usize),
    pause: Duration,
) -> std::thread::JoinHandle<()> {
    steady_load_with(bootstrap, topic, prefix, shape, pause, produce)
}

/// As [`steady_load`], each chunk written by `send` (for example
/// [`produce_one_per_batch`]).
pub fn steady_load_with(
    bootstrap: &str,
    topic: &'static str,
    prefix: &'static str,
    (chunks, per_chunk, users): (usize, usize, usize),
    pause: Duration,
    send: fn(&str, &str, &[Vec<u8>]),
) -> std::thread::JoinHandle<()> {
    let bootstrap = bootstrap.to_string();
    std::thread::spawn(move || {
        for chunk in 0..chunks {
            let batch: Vec<Vec<u8>> = (0..per_chunk)
                .map(|i| {
                    format!(
                        r#"{{"uid": {}, "request_id": "{prefix}-{}"}}"#,
                        1 + i % users,
                        chunk * per_chunk + i
                    )
                    .into_bytes()
                })
                .collect();
            send(&bootstrap, topic, &batch);
            std::thread::sleep(pause);
        }
    })
}

/// Every message of a topic, read from the beginning until `done` says so or the timeout passes.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    timeout: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len());
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while !done(&out) && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let value = serde_json::from_slice(message.payload().unwrap_or_default())
                .unwrap_or(Value::Null);
            out.push(value);
        }
    }
    out
}

/// Replies per request id.
pub fn replies_per_request(replies: &[Value]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for reply in replies {
        if let Some(id) = reply["request_id"].as_str() {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    counts
}

/// Reads replies until every id in `ids` has at least one. Counts as the
/// replies arrive: recounting all of them per message (tens of thousands in
/// a soak) outran the timeout and read as lost requests.
pub fn wait_for_replies(bootstrap: &str, ids: &HashSet<String>, timeout: Duration) -> Vec<Value> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut counted = 0;
    read_topic(bootstrap, OUT, timeout, |replies| {
        for reply in &replies[counted..] {
            if let Some(id) = reply["request_id"].as_str()
                && ids.contains(id)
            {
                seen.insert(id.to_string());
            }
        }
        counted = replies.len();
        seen.len() == ids.len()
    })
}

pub fn ids(prefix: &str, count: usize) -> HashSet<String> {
    (0..count).map(|i| format!("{prefix}-{i}")).collect()
}

/// Committed offsets of `group` on the input topic, and each partition's end
/// (one past its last message). The end is found by reading the partition,
/// not from the broker's high watermark: Tansu 0.6 reports the base offset of
/// the last batch plus one there.
pub fn committed_vs_end(bootstrap: &str, group: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(IN, p);
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    let ends = end_offsets(bootstrap, IN, partitions);
    (0..partitions)
        .map(|p| {
            let offset = match committed.find_partition(IN, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o,
                _ => -1,
            };
            (offset, ends[p as usize])
        })
        .collect()
}

/// One past the last offset of each partition, by reading it all.
pub fn end_offsets(bootstrap: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "end-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut ends = vec![0i64; partitions as usize];
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            let end = &mut ends[message.partition() as usize];
            *end = (*end).max(message.offset() + 1);
            quiet_since = Instant::now();
        }
    }
    ends
}

/// `GET path` on a metrics server: the status code and the body.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Waits until `GET /readyz` answers 200 (or the timeout passes).
pub fn wait_ready(addr: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if http_get(addr, "/readyz").is_some_and(|(status, _)| status == 200) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// The value of a metric line (`name{labels} value`) in Prometheus text.
pub fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Runs `recstream` with `args` to its end (at most `limit`), returning the
/// exit status, stderr and how long it took; stdin is closed.
pub fn run_to_end(args: &[&str], limit: Duration) -> (std::process::ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(recstream_binary())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start recstream");
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("recstream output");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
        started.elapsed(),
    )
}

/// Waits until the metric `name` on the server at `addr` satisfies `pred`;
/// returns its last value.
pub fn wait_metric(
    addr: &str,
    name: &str,
    timeout: Duration,
    pred: impl Fn(f64) -> bool,
) -> Option<f64> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    while Instant::now() < deadline {
        last = http_get(addr, "/metrics").and_then(|(_, text)| metric(&text, name));
        if last.is_some_and(&pred) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

/// The rating (partition, offset) each published user state came from.
pub fn rating_sources(users: &[&Value]) -> Vec<(i64, i64)> {
    users
        .iter()
        .map(|u| {
            (
                u["source"]["partition"].as_i64().unwrap_or(-1),
                u["source"]["offset"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// A `recstream run` process on its embedded broker; killed (SIGKILL) on
/// drop if still running.
pub struct Run {
    pub child: Child,
    /// The embedded broker's address, from the banner.
    pub broker: String,
}

impl Run {
    /// Starts `recstream run --model MODEL --data-dir DIR/data EXTRA...`
    /// (stderr discarded) and reads the broker address from its banner.
    pub fn start(model: &Path, dir: &Path, extra: &[&str]) -> Run {
        let mut child = Command::new(recstream_binary())
            .arg("run")
            .args(extra)
            .arg("--model")
            .arg(model)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start recstream run");
        let stdout = child.stdout.take().expect("stdout");
        let broker = broker_address(&mut std::io::BufRead::lines(std::io::BufReader::new(
            stdout,
        )));
        Run { child, broker }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker address `recstream run` prints in its banner (`  broker  HOST:PORT ...`).
pub fn broker_address(lines: &mut impl Iterator<Item = std::io::Result<String>>) -> String {
    lines
        .map_while(Result::ok)
        .find_map(|line| {
            line.trim().strip_prefix("broker").map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
        })
        .expect("run prints the broker address")
}

/// For diagnosing a failing run: `RECSTREAM_TEST_KAFKA_DEBUG=cgrp,fetch`
/// turns on librdkafka's debug contexts in the workers the tests start, and
/// lets their librdkafka debug lines through to the worker logs (which
/// failing tests print).
pub fn diagnostic_kafka_args() -> Vec<String> {
    std::env::var("RECSTREAM_TEST_KAFKA_DEBUG")
        .ok()
        .filter(|d| !d.is_empty())
        .map(|d| vec!["--kafka".to_string(), format!("debug={d}")])
        .unwrap_or_default()
}

/// The workers' `RUST_LOG`: librdkafka at warn, or at debug when
/// [`diagnostic_kafka_args`] asks for its debug contexts.
pub fn diagnostic_log_filter() -> &'static str {
    if diagnostic_kafka_args().is_empty() {
        "info,librdkafka=warn"
    } else {
        "info,librdkafka=debug"
    }
}
