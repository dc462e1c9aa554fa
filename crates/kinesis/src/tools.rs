//! `recstream produce` and `recstream consume` on a Kinesis stream: the
//! same jobs as their Kafka side (lines or prepared messages in, at a
//! steady rate if asked; every record of a stream printed), so a demo or a
//! load test needs no AWS command line.
//!
//! Every Kinesis record needs a partition key: a prepared message keeps its
//! key, and a line is keyed by its `uid` when it has one (so one user's
//! requests stay in order, on one shard), by its line number otherwise.
//! `consume` reads every shard, parents to their end before their
//! children, as the worker does.

use std::collections::{BTreeSet, VecDeque};
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use aws_sdk_kinesis::Client;
use recstream_stream::tools::{ConsumeLimits, ProduceReport, for_each_line, wait_turn};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, ShardPosition};
use crate::ledger::LedgerError;
use crate::lineage::{FirstStart, readable};
use crate::listing::list_shards;
use crate::reader::{ReaderOptions, Record, ShardEvent, read_shard};
use crate::sink::{PutResult, Sink};
use crate::streams::{StreamError, StreamUse, prepare};

/// Most records sent and not yet acknowledged.
const WINDOW: usize = 10_000;

/// How often `consume` lists the shards again (a reshard while it reads).
const LIST_EVERY: Duration = Duration::from_secs(10);

/// Why a tool stopped.
#[derive(Debug, thiserror::Error)]
pub enum KinesisToolError {
    /// The stream cannot be used.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The shards cannot be listed or read.
    #[error(transparent)]
    Shards(#[from] LedgerError),
}

/// Sends records while keeping at most [`WINDOW`] unacknowledged.
struct Sender {
    sink: Sink,
    pending: VecDeque<oneshot::Receiver<PutResult>>,
    report: ProduceReport,
    started: Option<Instant>,
}

impl Sender {
    fn new(client: &Client, stream: &str) -> Sender {
        Sender {
            sink: Sink::start(client.clone(), stream, WINDOW),
            pending: VecDeque::new(),
            report: ProduceReport {
                delivered: 0,
                failed: 0,
                elapsed: Duration::ZERO,
            },
            started: None,
        }
    }

    async fn send(&mut self, key: &[u8], data: Vec<u8>) {
        while self.pending.len() >= WINDOW {
            self.settle_one().await;
        }
        // Rates count from the first record, not from connecting.
        self.started.get_or_insert_with(Instant::now);
        self.pending.push_back(self.sink.send(key, data).await);
    }

    async fn settle_one(&mut self) {
        let Some(answer) = self.pending.pop_front() else {
            return;
        };
        match answer.await {
            Ok(Ok(_)) => self.report.delivered += 1,
            Ok(Err(e)) => {
                self.report.failed += 1;
                tracing::warn!(stream = %self.sink.stream(), "a record was not written: {e}");
            }
            Err(_) => self.report.failed += 1,
        }
    }

    async fn finish(mut self) -> ProduceReport {
        while !self.pending.is_empty() {
            self.settle_one().await;
        }
        self.report.elapsed = self.started.map_or(Duration::ZERO, |t| t.elapsed());
        self.report
    }
}

/// The `uid` of a JSON object, as a key: a string as it is, a number as
/// written; `None` for anything else.
pub fn uid_key(text: &str) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Keyed {
        uid: Option<serde_json::Value>,
    }
    match serde_json::from_str::<Keyed>(text).ok()?.uid? {
        serde_json::Value::String(uid) if !uid.is_empty() => Some(uid.into_bytes()),
        uid @ serde_json::Value::Number(_) => Some(uid.to_string().into_bytes()),
        _ => None,
    }
}

/// The partition key of a line: its `uid` when it is a JSON object with
/// one, its line number otherwise.
pub fn line_key(line: &str, number: u64) -> Vec<u8> {
    uid_key(line).unwrap_or_else(|| number.to_string().into_bytes())
}

/// Sends one record per non-empty line of `input` to `stream`.
pub async fn produce_lines<R: tokio::io::AsyncBufRead + Unpin>(
    client: &Client,
    stream: &str,
    input: R,
    shutdown: CancellationToken,
) -> ProduceReport {
    let mut sender = Sender::new(client, stream);
    let mut number = 0u64;
    for_each_line(input, &shutdown, async |line| {
        number += 1;
        let key = line_key(&line, number);
        sender.send(&key, line.into_bytes()).await;
        ControlFlow::Continue(())
    })
    .await;
    sender.finish().await
}

/// Sends `(key, payload)` messages in order, at `rate` per second if given;
/// a message without a key is keyed by its number.
pub async fn produce_paced(
    client: &Client,
    stream: &str,
    messages: impl Iterator<Item = (Option<Vec<u8>>, Vec<u8>)>,
    rate: Option<f64>,
    shutdown: CancellationToken,
) -> ProduceReport {
    let mut sender = Sender::new(client, stream);
    let started = Instant::now();
    for (n, (key, payload)) in messages.enumerate() {
        if shutdown.is_cancelled() {
            break;
        }
        wait_turn(started, n, rate).await;
        let key = key.unwrap_or_else(|| n.to_string().into_bytes());
        sender.send(&key, payload).await;
    }
    sender.finish().await
}

/// A record as the consume tool prints it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Printed {
    /// The stream.
    pub stream: String,
    /// The shard.
    pub shard: String,
    /// Its sequence number.
    pub sequence_number: String,
    /// When Kinesis received it, in milliseconds since the epoch.
    pub timestamp: Option<i64>,
    /// Its partition key.
    pub key: String,
    /// Its data, lossily decoded as UTF-8.
    pub payload: String,
}

impl Printed {
    fn new(stream: &str, shard: &str, record: Record) -> Printed {
        Printed {
            stream: stream.to_string(),
            shard: shard.to_string(),
            sequence_number: record.sequence,
            timestamp: record.arrival_ms,
            key: record.key,
            payload: String::from_utf8_lossy(&record.data).into_owned(),
        }
    }
}

/// Calls `each` for every record of `stream` (from the oldest kept, or only
/// new ones with [`FirstStart::Latest`]) until a limit, `shutdown`, or
/// `each` says [`ControlFlow::Break`]. Waits for the stream to be created.
/// Returns the number of records seen.
pub async fn consume(
    client: &Client,
    stream: &str,
    start: FirstStart,
    limits: ConsumeLimits,
    shutdown: CancellationToken,
    mut each: impl FnMut(&Printed) -> ControlFlow<()>,
) -> Result<u64, KinesisToolError> {
    if !wait_for_stream(client, stream, &shutdown).await? {
        return Ok(0);
    }
    let readers = shutdown.child_token();
    let _stop_readers = readers.clone().drop_guard();
    let (out, mut events) = mpsc::channel::<ShardEvent>(4);
    let mut ended = Checkpoint::new(stream);
    let mut reading = BTreeSet::new();
    let mut first = Some(start);
    let mut list_timer = tokio::time::interval(LIST_EVERY);
    let mut seen = 0u64;
    while !limits.reached(seen) {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = limits.idle() => break,
            _ = list_timer.tick() => {
                let listed = list_shards(client, stream).await.map_err(|reason| LedgerError::Listing { stream: stream.to_string(), reason })?;
                for (shard, at) in readable(&listed, &ended, &reading, first.take()) {
                    reading.insert(shard.clone());
                    tokio::spawn(read_shard(client.clone(), stream.to_string(), shard, at, ReaderOptions::default(), out.clone(), readers.child_token()));
                }
            }
            Some(event) = events.recv() => match event {
                ShardEvent::Records { shard, records } => {
                    for record in records {
                        if limits.reached(seen) {
                            break;
                        }
                        seen += 1;
                        if each(&Printed::new(stream, &shard, record)).is_break() {
                            return Ok(seen);
                        }
                    }
                }
                ShardEvent::Ended { shard, .. } => {
                    ended.shards.insert(shard, ShardPosition::End);
                    // List now: the children are readable.
                    list_timer.reset_immediately();
                }
                ShardEvent::Failed { shard, reason } => {
                    return Err(LedgerError::Shard { stream: stream.to_string(), shard, reason }.into());
                }
            },
        }
    }
    Ok(seen)
}

/// Waits until `stream` exists and is active, saying so once; `false` when
/// `shutdown` came first.
async fn wait_for_stream(
    client: &Client,
    stream: &str,
    shutdown: &CancellationToken,
) -> Result<bool, KinesisToolError> {
    let used = [StreamUse {
        stream: stream.to_string(),
        role: "to read",
    }];
    let mut said = false;
    loop {
        match prepare(client, &used, false, 1).await {
            Ok(()) => return Ok(true),
            Err(StreamError::Missing { .. }) => {
                if !said {
                    tracing::info!(stream, "waiting for the Kinesis stream to be created");
                    said = true;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return Ok(false),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_keyed_by_uid_or_by_number() {
        assert_eq!(line_key(r#"{"uid":196}"#, 1), b"196");
        assert_eq!(line_key(r#"{"uid":"u-7","n":3}"#, 2), b"u-7");
        assert_eq!(line_key(r#"{"uid":""}"#, 3), b"3");
        assert_eq!(line_key("not json", 4), b"4");
        assert_eq!(line_key(r#"{"n":3}"#, 5), b"5");
        assert_eq!(line_key(r#"[1,2]"#, 6), b"6");
    }
}
