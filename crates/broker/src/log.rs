//! One partition's log: the batches producers sent, indexed by offset.
//!
//! librdkafka's mock walks a linked list of message sets from the head on
//! every fetch; this log keeps its batches in a `VecDeque` ordered by base
//! offset, so a fetch finds its first batch by binary search and then copies
//! whole batches until its byte budget is spent. Retention drops whole
//! batches from the front and moves the log start offset, as Kafka's
//! segment deletion does (at batch rather than segment granularity).
//!
//! Idempotent producers are checked here too, because Kafka's rules are per
//! partition: each producer id keeps its epoch and its last five batches'
//! sequence ranges, so a retried batch is acknowledged with the offset it
//! first got and a gap is refused.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;
use kafka_protocol::ResponseError;

use crate::batch::{self, BatchHeader};

/// How many recent batches per producer Kafka remembers for deduplication
/// (librdkafka keeps at most this many in flight when idempotent).
const PRODUCER_WINDOW: usize = 5;

/// A batch as stored: its offsets and timestamps, and the bytes to serve.
#[derive(Debug, Clone)]
struct StoredBatch {
    base: i64,
    last: i64,
    /// Largest timestamp of this batch and every earlier one, so that a
    /// search by timestamp can be a binary search.
    max_timestamp_so_far: i64,
    bytes: Bytes,
}

#[derive(Debug, Clone, Copy)]
struct SentBatch {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Default)]
struct ProducerState {
    epoch: i16,
    recent: VecDeque<SentBatch>,
}

/// Offsets and size of one partition, for watches and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionStats {
    /// First offset still held.
    pub log_start_offset: i64,
    /// Offset the next record will get (the high watermark).
    pub log_end_offset: i64,
    /// Bytes of batches held.
    pub stored_bytes: u64,
    /// Batches held.
    pub batches: usize,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: i64,
    /// The batch was a retry of one already stored: nothing was added.
    pub duplicate: bool,
}

/// Whole batches read from a partition.
#[derive(Debug, Default)]
pub struct Read {
    /// The batches, in offset order, each whole.
    pub batches: Vec<Bytes>,
    /// Their total size.
    pub bytes: usize,
}

/// One partition.
#[derive(Debug)]
pub struct PartitionLog {
    batches: VecDeque<StoredBatch>,
    log_start: i64,
    log_end: i64,
    stored_bytes: u64,
    retention_bytes: u64,
    producers: HashMap<i64, ProducerState>,
}

impl PartitionLog {
    /// An empty partition that keeps at most `retention_bytes` (always at
    /// least its newest batch).
    pub fn new(retention_bytes: u64) -> Self {
        PartitionLog {
            batches: VecDeque::new(),
            log_start: 0,
            log_end: 0,
            stored_bytes: 0,
            retention_bytes,
            producers: HashMap::new(),
        }
    }

    /// Offsets and size now.
    pub fn stats(&self) -> PartitionStats {
        PartitionStats {
            log_start_offset: self.log_start,
            log_end_offset: self.log_end,
            stored_bytes: self.stored_bytes,
            batches: self.batches.len(),
        }
    }

    /// First offset held.
    pub fn log_start(&self) -> i64 {
        self.log_start
    }

    /// Next offset to be written.
    pub fn log_end(&self) -> i64 {
        self.log_end
    }

    /// Stores one validated batch (`bytes` as the producer sent it, `header`
    /// parsed from it), applying the idempotent-producer rules.
    pub fn append(
        &mut self,
        header: &BatchHeader,
        bytes: &[u8],
    ) -> Result<Appended, ResponseError> {
        if header.producer_id >= 0
            && let Some(done) = self.check_sequence(header)?
        {
            return Ok(done);
        }
        let base = self.log_end;
        let last = base + i64::from(header.last_offset_delta);
        let max_so_far = self.batches.back().map_or(header.max_timestamp, |b| {
            b.max_timestamp_so_far.max(header.max_timestamp)
        });
        let stored = batch::with_base_offset(bytes, base);
        self.stored_bytes += stored.len() as u64;
        self.batches.push_back(StoredBatch {
            base,
            last,
            max_timestamp_so_far: max_so_far,
            bytes: stored,
        });
        self.log_end = last + 1;
        if header.producer_id >= 0 {
            let state = self.producers.entry(header.producer_id).or_default();
            state.epoch = header.producer_epoch;
            if state.recent.len() == PRODUCER_WINDOW {
                state.recent.pop_front();
            }
            state.recent.push_back(SentBatch {
                first_seq: header.base_sequence,
                last_seq: header.last_sequence(),
                base_offset: base,
            });
        }
        self.enforce_retention();
        Ok(Appended {
            base_offset: base,
            duplicate: false,
        })
    }

    /// Kafka's sequence rules: `Ok(Some)` for a duplicate (answered with its
    /// first offset), `Ok(None)` to append, or the error to answer.
    fn check_sequence(&mut self, h: &BatchHeader) -> Result<Option<Appended>, ResponseError> {
        let Some(state) = self.producers.get_mut(&h.producer_id) else {
            // A producer new to this partition starts at sequence 0.
            return if h.base_sequence == 0 {
                Ok(None)
            } else {
                Err(ResponseError::OutOfOrderSequenceNumber)
            };
        };
        if h.producer_epoch < state.epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        if h.producer_epoch > state.epoch {
            // A bumped epoch starts its sequences again.
            if h.base_sequence != 0 {
                return Err(ResponseError::OutOfOrderSequenceNumber);
            }
            state.recent.clear();
            return Ok(None);
        }
        let last_seq = h.last_sequence();
        if let Some(dup) = state
            .recent
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return Ok(Some(Appended {
                base_offset: dup.base_offset,
                duplicate: true,
            }));
        }
        let expected = state
            .recent
            .back()
            .map_or(0, |b| batch::wrapping_seq(b.last_seq, 1));
        if h.base_sequence != expected {
            return Err(ResponseError::OutOfOrderSequenceNumber);
        }
        Ok(None)
    }

    fn enforce_retention(&mut self) {
        while self.stored_bytes > self.retention_bytes && self.batches.len() > 1 {
            if let Some(old) = self.batches.pop_front() {
                self.stored_bytes -= old.bytes.len() as u64;
            }
            if let Some(front) = self.batches.front() {
                self.log_start = front.base;
            }
        }
    }

    /// Whole batches from the one holding `offset` on, as many as fit in
    /// `max_bytes` (the first always, however big, so that a consumer can
    /// never get stuck behind a batch larger than its budget).
    /// `Err(OffsetOutOfRange)` when `offset` is before the log start or
    /// past the log end.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<Read, ResponseError> {
        if offset < self.log_start || offset > self.log_end {
            return Err(ResponseError::OffsetOutOfRange);
        }
        let first = self.batches.partition_point(|b| b.last < offset);
        let mut read = Read::default();
        for b in self.batches.range(first..) {
            if !read.batches.is_empty() && read.bytes + b.bytes.len() > max_bytes {
                break;
            }
            read.bytes += b.bytes.len();
            read.batches.push(b.bytes.clone());
        }
        Ok(read)
    }

    /// Bytes available from `offset` on, capped at `cap` (for `min_bytes`).
    pub fn available_from(&self, offset: i64, cap: usize) -> usize {
        if offset < self.log_start || offset >= self.log_end {
            return 0;
        }
        let first = self.batches.partition_point(|b| b.last < offset);
        let mut total = 0;
        for b in self.batches.range(first..) {
            total += b.bytes.len();
            if total >= cap {
                break;
            }
        }
        total
    }

    /// The first offset of the first batch holding a timestamp at or after
    /// `timestamp`, or `None` when every record is older. Batch granularity:
    /// records are never decoded, so the answer may be a few records early.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Option<i64> {
        let i = self
            .batches
            .partition_point(|b| b.max_timestamp_so_far < timestamp);
        self.batches.get(i).map(|b| b.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::tests::batch;

    fn append(log: &mut PartitionLog, b: &[u8]) -> Result<Appended, ResponseError> {
        let h = batch::parse(b).unwrap();
        log.append(&h, b)
    }

    #[test]
    fn offsets_are_contiguous_and_reads_start_at_the_batch_holding_the_offset() {
        let mut log = PartitionLog::new(u64::MAX);
        for _ in 0..100 {
            append(&mut log, &batch(3, -1, -1, -1, 0)).unwrap();
        }
        assert_eq!(log.log_end(), 300);
        // Offset 151 lies inside the batch 150..=152: that batch comes first.
        let read = log.read(151, usize::MAX).unwrap();
        assert_eq!(read.batches.len(), 50);
        assert_eq!(
            i64::from_be_bytes(read.batches[0][..8].try_into().unwrap()),
            150
        );
        // A budget smaller than one batch still returns that one batch.
        let one = log.read(0, 1).unwrap();
        assert_eq!(one.batches.len(), 1);
        let len = one.bytes;
        assert_eq!(log.read(0, 3 * len).unwrap().batches.len(), 3);
        assert!(log.read(300, usize::MAX).unwrap().batches.is_empty());
        assert_eq!(
            log.read(301, 10).unwrap_err(),
            ResponseError::OffsetOutOfRange
        );
    }

    #[test]
    fn retention_drops_the_oldest_batches_and_moves_the_log_start() {
        let one = batch(1, -1, -1, -1, 0);
        let mut log = PartitionLog::new(10 * one.len() as u64);
        for _ in 0..25 {
            append(&mut log, &one).unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.batches, 10);
        assert_eq!(stats.log_start_offset, 15);
        assert_eq!(stats.log_end_offset, 25);
        assert_eq!(
            log.read(3, 100).unwrap_err(),
            ResponseError::OffsetOutOfRange
        );
        assert_eq!(log.read(15, usize::MAX).unwrap().batches.len(), 10);
    }

    #[test]
    fn a_retried_batch_gets_its_first_offset_and_adds_nothing() {
        let mut log = PartitionLog::new(u64::MAX);
        let first = batch(2, 9, 0, 0, 0);
        assert_eq!(append(&mut log, &first).unwrap().base_offset, 0);
        append(&mut log, &batch(2, 9, 0, 2, 0)).unwrap();
        let again = append(&mut log, &first).unwrap();
        assert_eq!(
            again,
            Appended {
                base_offset: 0,
                duplicate: true
            }
        );
        assert_eq!(log.log_end(), 4);
    }

    #[test]
    fn a_sequence_gap_or_a_fenced_epoch_is_refused() {
        let mut log = PartitionLog::new(u64::MAX);
        append(&mut log, &batch(2, 9, 1, 0, 0)).unwrap();
        assert_eq!(
            append(&mut log, &batch(1, 9, 1, 5, 0)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        assert_eq!(
            append(&mut log, &batch(1, 9, 0, 2, 0)),
            Err(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            append(&mut log, &batch(1, 10, 0, 3, 0)),
            Err(ResponseError::OutOfOrderSequenceNumber)
        );
        // A new epoch starts at 0 again.
        append(&mut log, &batch(1, 9, 2, 0, 0)).unwrap();
        assert_eq!(log.log_end(), 3);
    }

    #[test]
    fn timestamps_are_searched_by_running_maximum() {
        let mut log = PartitionLog::new(u64::MAX);
        for ts in [10, 20, 15, 30] {
            append(&mut log, &batch(1, -1, -1, -1, ts)).unwrap();
        }
        assert_eq!(log.offset_for_timestamp(5), Some(0));
        assert_eq!(log.offset_for_timestamp(16), Some(1));
        assert_eq!(log.offset_for_timestamp(25), Some(3));
        assert_eq!(log.offset_for_timestamp(31), None);
    }
}
