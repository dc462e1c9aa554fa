//! Writing records to a Kinesis stream: PutRecords batches, each record's
//! key in order, only the failed entries retried.
//!
//! Records queue on a bounded channel (a full queue makes the writer wait:
//! backpressure) and go out in PutRecords calls of at most 500 records and
//! 5 MiB, one call at a time. PutRecords does not keep the order of the
//! records of one call, so a call holds at most one record per partition
//! key, and a record waits while an earlier record of its key is in a call
//! or waiting to be retried: a key's records reach the stream in the order
//! they were sent. Entries that fail for throughput or an internal error
//! are retried (with backoff) before anything later of their key; a record
//! Kinesis can never take (over 1 MiB, or refused as invalid) is answered
//! with the reason, once, and never retried.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use tokio::sync::{mpsc, oneshot};

use crate::backoff::Backoff;
use crate::error::{Reaction, describe, react, react_to_code};
use crate::metrics as m;

/// Most records in one PutRecords call.
pub const MAX_RECORDS: usize = 500;
/// Most bytes (payloads and keys) in one PutRecords call.
pub const MAX_CALL_BYTES: usize = 5 * 1024 * 1024;
/// Most bytes of one record, payload and key.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// Longest partition key, in characters.
pub const MAX_KEY_CHARS: usize = 256;

/// Why a record was not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutError {
    /// Larger than Kinesis takes.
    #[error("the record is {bytes} bytes with its key, over Kinesis's limit of {MAX_RECORD_BYTES}")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// Kinesis refused it for good.
    #[error("Kinesis refused the record: {reason}")]
    Refused {
        /// Kinesis's reason.
        reason: String,
    },
    /// The sink stopped before the record was written.
    #[error("the Kinesis sink for {stream:?} stopped")]
    Stopped {
        /// The stream.
        stream: String,
    },
}

/// The answer for one record: its sequence number once written.
pub type PutResult = Result<String, PutError>;

/// One record to write.
#[derive(Debug)]
struct Put {
    key: String,
    data: Vec<u8>,
    done: oneshot::Sender<PutResult>,
}

impl Put {
    fn bytes(&self) -> usize {
        self.data.len() + self.key.len()
    }
}

/// A writer of one stream; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sink {
    stream: String,
    queue: mpsc::Sender<Put>,
}

impl Sink {
    /// Starts the writer of `stream`, holding up to `capacity` records queued.
    pub fn start(client: Client, stream: &str, capacity: usize) -> Sink {
        let (queue, records) = mpsc::channel(capacity.max(1));
        let writer = Writer {
            client,
            stream: stream.to_string(),
            records,
            waiting: VecDeque::new(),
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
        };
        tokio::spawn(writer.run());
        Sink {
            stream: stream.to_string(),
            queue,
        }
    }

    /// The stream written to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Queues a record keyed `key` (waiting while the queue is full); the
    /// receiver gets its sequence number once it is written, or why not.
    pub async fn send(&self, key: &[u8], data: Vec<u8>) -> oneshot::Receiver<PutResult> {
        let (done, answer) = oneshot::channel();
        let put = Put {
            key: partition_key(key),
            data,
            done,
        };
        if put.bytes() > MAX_RECORD_BYTES {
            let bytes = put.bytes();
            let _ = put.done.send(Err(PutError::TooLarge { bytes }));
            return answer;
        }
        if let Err(mpsc::error::SendError(put)) = self.queue.send(put).await {
            let _ = put.done.send(Err(PutError::Stopped {
                stream: self.stream.clone(),
            }));
        }
        answer
    }
}

/// A partition key from a record key: as is when Kinesis takes it, a
/// digest of it otherwise (empty, or over 256 characters), so that one key
/// always maps to one partition key.
pub fn partition_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    let chars = text.chars().count();
    if (1..=MAX_KEY_CHARS).contains(&chars) {
        text.into_owned()
    } else {
        format!("crc32:{:08x}:{}", crc32fast::hash(key), key.len())
    }
}

struct Writer {
    client: Client,
    stream: String,
    records: mpsc::Receiver<Put>,
    /// Records not written yet, in the order sent (retries first).
    waiting: VecDeque<Put>,
    backoff: Backoff,
}

impl Writer {
    async fn run(mut self) {
        loop {
            if self.waiting.is_empty() {
                match self.records.recv().await {
                    Some(put) => self.waiting.push_back(put),
                    None => return,
                }
            }
            while self.waiting.len() < 4 * MAX_RECORDS {
                match self.records.try_recv() {
                    Ok(put) => self.waiting.push_back(put),
                    Err(_) => break,
                }
            }
            let batch = self.next_call();
            self.write(batch).await;
        }
    }

    /// Takes the next call's records from the waiting ones: in order, at
    /// most one per key, none of a key that an earlier waiting record holds
    /// back, within the call's limits.
    fn next_call(&mut self) -> Vec<Put> {
        let mut batch = Vec::new();
        let mut keys = BTreeSet::new();
        let mut bytes = 0;
        let mut left = VecDeque::with_capacity(self.waiting.len());
        while let Some(put) = self.waiting.pop_front() {
            let fits = batch.len() < MAX_RECORDS && bytes + put.bytes() <= MAX_CALL_BYTES;
            // Inserting also holds back the key's later records.
            if keys.insert(put.key.clone()) && fits {
                bytes += put.bytes();
                batch.push(put);
            } else {
                left.push_back(put);
            }
        }
        self.waiting = left;
        batch
    }

    /// Writes one call, answering each record written or refused and
    /// putting back, ahead of the rest, those to retry.
    async fn write(&mut self, batch: Vec<Put>) {
        let entries: Vec<PutRecordsRequestEntry> = batch
            .iter()
            .filter_map(|put| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&put.key)
                    .data(Blob::new(put.data.clone()))
                    .build()
                    .ok()
            })
            .collect();
        let call = self
            .client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(entries))
            .send()
            .await;
        let mut retry = Vec::new();
        match call {
            Ok(output) => {
                let results = output.records();
                for (put, result) in batch.into_iter().zip(results) {
                    match (result.error_code(), result.sequence_number()) {
                        (None, Some(sequence)) => {
                            let _ = put.done.send(Ok(sequence.to_string()));
                        }
                        (code, _) => match react_to_code(code) {
                            Reaction::Permanent => {
                                let reason = format!(
                                    "{}: {}",
                                    code.unwrap_or("no sequence number"),
                                    result.error_message().unwrap_or_default()
                                );
                                let _ = put.done.send(Err(PutError::Refused { reason }));
                            }
                            _ => retry.push(put),
                        },
                    }
                }
                if retry.is_empty() {
                    self.backoff.reset();
                } else {
                    metrics::counter!(m::THROTTLED, "call" => "PutRecords")
                        .increment(retry.len() as u64);
                }
            }
            Err(error) => match react(&error) {
                Reaction::Permanent if batch.len() == 1 => {
                    for put in batch {
                        let reason = describe(&error);
                        let _ = put.done.send(Err(PutError::Refused { reason }));
                    }
                }
                reaction => {
                    if reaction == Reaction::Permanent {
                        // One bad record refuses the whole call: find it by
                        // writing each alone (one per key: order holds).
                        tracing::warn!(stream = %self.stream, "a PutRecords call was refused ({}); writing its records one by one", describe(&error));
                        for put in batch {
                            Box::pin(self.write(vec![put])).await;
                        }
                        return;
                    }
                    if self.backoff.failures().is_multiple_of(10) {
                        tracing::warn!(stream = %self.stream, "writing to the stream failed ({}); retrying", describe(&error));
                    }
                    retry = batch;
                }
            },
        }
        if !retry.is_empty() {
            for put in retry.into_iter().rev() {
                self.waiting.push_front(put);
            }
            tokio::time::sleep(self.backoff.next_wait()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
    use aws_sdk_kinesis::types::PutRecordsResultEntry;
    use aws_sdk_kinesis::types::error::{
        InvalidArgumentException, ProvisionedThroughputExceededException,
    };
    use aws_smithy_mocks::{MockResponse, RuleMode, mock, mock_client};

    use super::*;
    use crate::scripted::{coded, no_sdk_retries};

    type Calls = Arc<Mutex<Vec<Vec<(String, String)>>>>;
    type Respond = dyn Fn(usize, &[(String, String)]) -> MockResponse<PutRecordsOutput, PutRecordsError>
        + Send
        + Sync;

    /// A client whose PutRecords calls are recorded (key, data) and
    /// answered by `respond(call number, records)`.
    fn scripted(respond: Box<Respond>) -> (Client, Calls) {
        let calls: Calls = Arc::default();
        let seen = calls.clone();
        let rule = mock!(Client::put_records).then_compute_response(move |input| {
            let records: Vec<(String, String)> = input
                .records()
                .iter()
                .map(|r| {
                    let data = String::from_utf8_lossy(r.data().as_ref()).into_owned();
                    (r.partition_key().unwrap_or_default().to_string(), data)
                })
                .collect();
            let mut calls = seen.lock().unwrap();
            calls.push(records.clone());
            respond(calls.len(), &records)
        });
        let client = mock_client!(
            aws_sdk_kinesis,
            RuleMode::MatchAny,
            &[&rule],
            no_sdk_retries
        );
        (client, calls)
    }

    fn written(n: usize) -> PutRecordsResultEntry {
        PutRecordsResultEntry::builder()
            .sequence_number(format!("{n}"))
            .shard_id("shardId-000000000000")
            .build()
    }

    fn throttled() -> PutRecordsResultEntry {
        PutRecordsResultEntry::builder()
            .error_code("ProvisionedThroughputExceededException")
            .error_message("Rate exceeded for shard")
            .build()
    }

    fn output(
        entries: Vec<PutRecordsResultEntry>,
    ) -> MockResponse<PutRecordsOutput, PutRecordsError> {
        let failed = entries.iter().filter(|e| e.error_code().is_some()).count() as i32;
        MockResponse::Output(
            PutRecordsOutput::builder()
                .set_records(Some(entries))
                .failed_record_count(failed)
                .build()
                .unwrap(),
        )
    }

    async fn send_all(sink: &Sink, records: &[(&str, &str)]) -> Vec<PutResult> {
        let mut answers = Vec::new();
        for (key, data) in records {
            answers.push(sink.send(key.as_bytes(), data.as_bytes().to_vec()).await);
        }
        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap());
        }
        results
    }

    fn pairs(records: &[(&str, &str)]) -> Vec<(String, String)> {
        records
            .iter()
            .map(|(k, d)| (k.to_string(), d.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn only_failed_entries_are_retried_and_a_keys_later_record_waits_for_them() {
        let (client, calls) = scripted(Box::new(|call, records| {
            output(
                records
                    .iter()
                    .enumerate()
                    // The first call's first entry is throttled.
                    .map(|(i, _)| {
                        if call == 1 && i == 0 {
                            throttled()
                        } else {
                            written(call * 10 + i)
                        }
                    })
                    .collect(),
            )
        }));
        let sink = Sink::start(client, "replies", 16);
        // Queued together before the writer starts its first call.
        let records = [("u1", "a"), ("u2", "b"), ("u1", "c")];
        let results = send_all(&sink, &records).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let calls = calls.lock().unwrap().clone();
        let u1: Vec<&str> = calls
            .iter()
            .flatten()
            .filter(|(k, _)| k == "u1")
            .map(|(_, d)| d.as_str())
            .collect();
        assert_eq!(u1, ["a", "a", "c"], "a retried before c is sent: {calls:?}");
        let u2 = calls.iter().flatten().filter(|(k, _)| k == "u2").count();
        assert_eq!(u2, 1, "the entry written is not sent again: {calls:?}");
        assert!(
            calls.iter().all(|call| {
                let keys: BTreeSet<&String> = call.iter().map(|(k, _)| k).collect();
                keys.len() == call.len()
            }),
            "one record per key per call: {calls:?}"
        );
    }

    #[tokio::test]
    async fn a_throttled_call_is_sent_again_whole() {
        let (client, calls) = scripted(Box::new(|call, records| {
            if call == 1 {
                MockResponse::Error(PutRecordsError::ProvisionedThroughputExceededException(
                    ProvisionedThroughputExceededException::builder()
                        .message("Rate exceeded")
                        .meta(coded("ProvisionedThroughputExceededException"))
                        .build(),
                ))
            } else {
                output((0..records.len()).map(written).collect())
            }
        }));
        let sink = Sink::start(client, "replies", 16);
        let records = [("u1", "a"), ("u2", "b")];
        let results = send_all(&sink, &records).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[1], pairs(&records));
    }

    #[tokio::test]
    async fn a_call_refused_as_invalid_finds_the_bad_record_alone_and_never_retries_it() {
        let (client, calls) = scripted(Box::new(|_, records| {
            if records.iter().any(|(_, d)| d == "bad") {
                MockResponse::Error(PutRecordsError::InvalidArgumentException(
                    InvalidArgumentException::builder()
                        .message("invalid record")
                        .meta(coded("InvalidArgumentException"))
                        .build(),
                ))
            } else {
                output((0..records.len()).map(written).collect())
            }
        }));
        let sink = Sink::start(client, "replies", 16);
        let records = [("u1", "bad"), ("u2", "good")];
        let results = send_all(&sink, &records).await;
        assert!(
            matches!(&results[0], Err(PutError::Refused { reason }) if reason.contains("InvalidArgumentException")),
            "{results:?}"
        );
        assert!(results[1].is_ok(), "{results:?}");
        let calls = calls.lock().unwrap().clone();
        let bad = calls.iter().flatten().filter(|(_, d)| d == "bad").count();
        assert_eq!(
            bad, 2,
            "the bad record: once in the call, once alone: {calls:?}"
        );
    }

    #[test]
    fn partition_keys_are_the_key_or_a_stable_digest_of_it() {
        assert_eq!(partition_key(b"196"), "196");
        let long = vec![b'u'; 300];
        assert_eq!(partition_key(&long), partition_key(&long));
        assert!(partition_key(&long).len() <= MAX_KEY_CHARS);
        assert!(partition_key(b"").starts_with("crc32:"));
    }
}
