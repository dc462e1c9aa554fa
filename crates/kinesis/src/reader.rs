//! Reading one shard, in order, within Kinesis's limits.
//!
//! A reader gets an iterator where its shard starts (after the checkpoint's
//! sequence number, or at the horizon or the tip), then calls GetRecords
//! in a loop and sends what it gets down a bounded channel: when the
//! worker is busy the reader waits, so in-flight work stays bounded. Calls
//! are spaced at least `poll` apart (a shard allows 5 reads a second,
//! shared by every consumer), throttling backs off with jitter, an expired
//! iterator is renewed right after the last record read, and
//! `MillisBehindLatest` is reported per shard. When the shard is closed and
//! read to its end, the reader says so, with the children Kinesis named
//! (if it named any), and stops.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::ShardIteratorType;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::error::{Reaction, describe, react};
use crate::lineage::StartAt;
use crate::metrics as m;

/// Records asked for in one call.
const LIMIT: i32 = 1_000;

/// Least time between two GetRecords calls on a shard: Kinesis allows 5 a
/// second per shard, shared by every consumer of the stream.
const MIN_SPACING: Duration = Duration::from_millis(200);

/// One record read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its sequence number.
    pub sequence: String,
    /// Its partition key.
    pub key: String,
    /// Its payload.
    pub data: Vec<u8>,
    /// When Kinesis received it, in milliseconds since the epoch.
    pub arrival_ms: Option<i64>,
}

/// What a reader reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardEvent {
    /// Records, in the shard's order.
    Records {
        /// The shard.
        shard: String,
        /// The records.
        records: Vec<Record>,
    },
    /// The shard is closed and every record of it was sent before this.
    Ended {
        /// The shard.
        shard: String,
        /// Its children, when Kinesis named them (empty: list the shards).
        children: Vec<String>,
    },
    /// The shard cannot be read (no such stream, no permission): the
    /// reader stopped.
    Failed {
        /// The shard.
        shard: String,
        /// Why.
        reason: String,
    },
}

/// How a reader reads.
#[derive(Debug, Clone, Copy)]
pub struct ReaderOptions {
    /// Time between two GetRecords calls of this reader once it has caught
    /// up with its shard (never below 200 ms: a shard allows 5 reads a second).
    pub poll: Duration,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            poll: Duration::from_millis(250),
        }
    }
}

/// Reads `shard` of `stream` from `start` until it ends, fails for good, or
/// `shutdown`; every outcome is reported on `out`.
pub async fn read_shard(
    client: Client,
    stream: String,
    shard: String,
    start: StartAt,
    options: ReaderOptions,
    out: mpsc::Sender<ShardEvent>,
    shutdown: CancellationToken,
) {
    let mut reader = Reader {
        client,
        stream,
        shard,
        start,
        last: None,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
    };
    let event = tokio::select! {
        _ = shutdown.cancelled() => return,
        event = reader.run(&options, &out) => event,
    };
    if let Some(event) = event {
        let _ = out.send(event).await;
    }
}

struct Reader {
    client: Client,
    stream: String,
    shard: String,
    start: StartAt,
    /// The last record read.
    last: Option<String>,
    backoff: Backoff,
}

impl Reader {
    /// Reads to the end; the last event to report (`None`: the worker is gone).
    async fn run(
        &mut self,
        options: &ReaderOptions,
        out: &mpsc::Sender<ShardEvent>,
    ) -> Option<ShardEvent> {
        let mut iterator = match self.iterator().await {
            Ok(iterator) => iterator,
            Err(reason) => return Some(self.failed(reason)),
        };
        loop {
            let started = tokio::time::Instant::now();
            let call = self
                .client
                .get_records()
                .shard_iterator(&iterator)
                .limit(LIMIT)
                .send()
                .await;
            let output = match call {
                Ok(output) => output,
                Err(error) => {
                    match react(&error) {
                        Reaction::RenewIterator => {
                            metrics::counter!(m::ITERATORS_RENEWED).increment(1);
                            tracing::info!(shard = %self.shard, "shard iterator expired; renewing it after the last record read");
                            match self.iterator().await {
                                Ok(fresh) => iterator = fresh,
                                Err(reason) => return Some(self.failed(reason)),
                            }
                        }
                        Reaction::Throttled => {
                            metrics::counter!(m::THROTTLED, "call" => "GetRecords").increment(1);
                            tokio::time::sleep(self.backoff.next_wait()).await;
                        }
                        Reaction::Transient => {
                            self.log_retry(&describe(&error));
                            tokio::time::sleep(self.backoff.next_wait()).await;
                        }
                        Reaction::Permanent => return Some(self.failed(describe(&error))),
                    }
                    continue;
                }
            };
            self.backoff.reset();
            if let Some(behind) = output.millis_behind_latest() {
                metrics::gauge!(m::MILLIS_BEHIND, "shard" => self.shard.clone()).set(behind as f64);
            }
            let records: Vec<Record> = output.records().iter().map(record).collect();
            let caught_up = records.is_empty();
            if let Some(last) = records.last() {
                self.last = Some(last.sequence.clone());
                let event = ShardEvent::Records {
                    shard: self.shard.clone(),
                    records,
                };
                out.send(event).await.ok()?;
            }
            let Some(next) = output.next_shard_iterator() else {
                let children = output
                    .child_shards()
                    .iter()
                    .map(|c| c.shard_id().to_string())
                    .collect();
                return Some(ShardEvent::Ended {
                    shard: self.shard.clone(),
                    children,
                });
            };
            iterator = next.to_string();
            // A shard takes 5 reads a second: a reader behind reads at that
            // pace, one caught up every `poll` (never faster).
            let pause = if caught_up {
                options.poll.max(MIN_SPACING)
            } else {
                MIN_SPACING
            };
            tokio::time::sleep_until(started + pause).await;
        }
    }

    /// An iterator right after the last record read, or where the shard
    /// starts before any was; throttling and hiccups are retried.
    async fn iterator(&mut self) -> Result<String, String> {
        loop {
            let request = self
                .client
                .get_shard_iterator()
                .stream_name(&self.stream)
                .shard_id(&self.shard);
            let request = match (&self.last, &self.start) {
                (Some(sequence), _) | (None, StartAt::After(sequence)) => request
                    .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                    .starting_sequence_number(sequence),
                (None, StartAt::TrimHorizon) => {
                    request.shard_iterator_type(ShardIteratorType::TrimHorizon)
                }
                (None, StartAt::Latest) => request.shard_iterator_type(ShardIteratorType::Latest),
            };
            match request.send().await {
                Ok(output) => match output.shard_iterator() {
                    Some(iterator) => return Ok(iterator.to_string()),
                    None => return Err("GetShardIterator returned no iterator".into()),
                },
                Err(error) => match react(&error) {
                    Reaction::Permanent => return Err(describe(&error)),
                    Reaction::Throttled => {
                        metrics::counter!(m::THROTTLED, "call" => "GetShardIterator").increment(1);
                        tokio::time::sleep(self.backoff.next_wait()).await;
                    }
                    Reaction::RenewIterator | Reaction::Transient => {
                        self.log_retry(&describe(&error));
                        tokio::time::sleep(self.backoff.next_wait()).await;
                    }
                },
            }
        }
    }

    fn failed(&self, reason: String) -> ShardEvent {
        tracing::error!(shard = %self.shard, stream = %self.stream, "cannot read the shard: {reason}");
        ShardEvent::Failed {
            shard: self.shard.clone(),
            reason,
        }
    }

    /// Logs a retried failure at its first and every tenth occurrence.
    fn log_retry(&self, what: &str) {
        if self.backoff.failures().is_multiple_of(10) {
            tracing::warn!(shard = %self.shard, "reading the shard failed ({what}); retrying");
        }
    }
}

/// The SDK's record as ours.
fn record(record: &aws_sdk_kinesis::types::Record) -> Record {
    Record {
        sequence: record.sequence_number().to_string(),
        key: record.partition_key().unwrap_or_default().to_string(),
        data: record.data().as_ref().to_vec(),
        arrival_ms: record
            .approximate_arrival_timestamp()
            .and_then(|t| t.to_millis().ok()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_kinesis::operation::get_records::{GetRecordsError, GetRecordsOutput};
    use aws_sdk_kinesis::operation::get_shard_iterator::GetShardIteratorOutput;
    use aws_sdk_kinesis::primitives::Blob;
    use aws_sdk_kinesis::types::error::{
        ExpiredIteratorException, ProvisionedThroughputExceededException,
    };
    use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};

    use super::*;
    use crate::scripted::{coded, no_sdk_retries};

    fn sdk_record(sequence: &str) -> aws_sdk_kinesis::types::Record {
        aws_sdk_kinesis::types::Record::builder()
            .sequence_number(sequence)
            .partition_key("u1")
            .data(Blob::new(sequence.as_bytes()))
            .build()
            .unwrap()
    }

    fn records(
        sequences: &[&str],
        next: Option<&str>,
    ) -> MockResponse<GetRecordsOutput, GetRecordsError> {
        MockResponse::Output(
            GetRecordsOutput::builder()
                .set_records(Some(sequences.iter().map(|s| sdk_record(s)).collect()))
                .set_next_shard_iterator(next.map(str::to_string))
                .millis_behind_latest(0)
                .build()
                .unwrap(),
        )
    }

    /// Reads a shard whose GetRecords calls are scripted by `respond(call
    /// number)`; the events, and where each iterator was asked to start.
    async fn read_scripted(
        respond: impl Fn(usize) -> MockResponse<GetRecordsOutput, GetRecordsError>
        + Send
        + Sync
        + 'static,
    ) -> (Vec<ShardEvent>, Vec<String>) {
        let asked: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = asked.clone();
        let iterators = mock!(Client::get_shard_iterator).then_compute_response(move |input| {
            let from = format!(
                "{} {}",
                input
                    .shard_iterator_type()
                    .map(|t| t.as_str())
                    .unwrap_or_default(),
                input.starting_sequence_number().unwrap_or_default()
            );
            seen.lock().unwrap().push(from.trim().to_string());
            MockResponse::Output(
                GetShardIteratorOutput::builder()
                    .shard_iterator("it")
                    .build(),
            )
        });
        let calls = Arc::new(Mutex::new(0usize));
        let reads = mock!(Client::get_records).then_compute_response(move |_| {
            let mut calls = calls.lock().unwrap();
            *calls += 1;
            respond(*calls)
        });
        let client = mock_client!(
            aws_sdk_kinesis,
            RuleMode::MatchAny,
            &[&iterators, &reads],
            no_sdk_retries
        );
        let (out, mut events) = mpsc::channel(16);
        let options = ReaderOptions {
            poll: Duration::from_millis(1),
        };
        let reading = read_shard(
            client,
            "requests".into(),
            "shardId-000000000000".into(),
            StartAt::TrimHorizon,
            options,
            out,
            CancellationToken::new(),
        );
        tokio::time::timeout(Duration::from_secs(30), reading)
            .await
            .expect("the reader reaches the shard's end");
        let mut got = Vec::new();
        while let Ok(event) = events.try_recv() {
            got.push(event);
        }
        let asked = asked.lock().unwrap().clone();
        (got, asked)
    }

    fn sequences(events: &[ShardEvent]) -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                ShardEvent::Records { records, .. } => Some(records),
                _ => None,
            })
            .flatten()
            .map(|r| r.sequence.clone())
            .collect()
    }

    #[tokio::test]
    async fn an_expired_iterator_is_renewed_right_after_the_last_record_read() {
        let (events, asked) = read_scripted(|call| match call {
            1 => records(&["11", "12"], Some("it")),
            2 => MockResponse::Error(GetRecordsError::ExpiredIteratorException(
                ExpiredIteratorException::builder()
                    .message("expired")
                    .meta(coded("ExpiredIteratorException"))
                    .build(),
            )),
            3 => records(&["13"], Some("it")),
            _ => records(&[], None),
        })
        .await;
        assert_eq!(asked, ["TRIM_HORIZON", "AFTER_SEQUENCE_NUMBER 12"]);
        assert_eq!(
            sequences(&events),
            ["11", "12", "13"],
            "nothing lost or read twice"
        );
        assert!(matches!(events.last(), Some(ShardEvent::Ended { .. })));
    }

    #[tokio::test]
    async fn throttled_reads_back_off_and_carry_on_with_the_same_iterator() {
        let (events, asked) = read_scripted(|call| match call {
            1 | 2 => MockResponse::Error(GetRecordsError::ProvisionedThroughputExceededException(
                ProvisionedThroughputExceededException::builder()
                    .message("Rate exceeded for shard")
                    .meta(coded("ProvisionedThroughputExceededException"))
                    .build(),
            )),
            3 => records(&["21"], Some("it")),
            _ => records(&[], None),
        })
        .await;
        assert_eq!(asked, ["TRIM_HORIZON"], "no new iterator for throttling");
        assert_eq!(sequences(&events), ["21"]);
        assert!(matches!(events.last(), Some(ShardEvent::Ended { .. })));
    }
}
