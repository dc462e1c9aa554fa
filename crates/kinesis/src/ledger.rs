//! The shards a reader of one stream works through, and how far each is
//! done: the checkpoint rule of every Kinesis consumer in recstream.
//!
//! The ledger numbers each shard it reads (the [`OffsetTracker`]'s
//! "partition") and counts the shard's records (the "offset"), so the same
//! tracker as Kafka's says which records are safe to checkpoint: a shard's
//! checkpoint moves to a record's sequence number only when that record and
//! every earlier one of the shard are done (their output acknowledged). A
//! shard read to its end is recorded as ended once all of it is done, and
//! only then are its children readable, so each key's records keep their
//! order across splits and merges. The ledger starts a reader for each
//! shard readable now; its events go to the consumer, which reports back
//! what is done.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use aws_sdk_kinesis::Client;
use recstream_stream::tracker::{OffsetTracker, Ticket};
use recstream_stream::worker::Position;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::{Checkpoint, CheckpointError, FileStore, ShardPosition};
use crate::lineage::{FirstStart, readable};
use crate::listing::list_shards;
use crate::metrics as m;
use crate::reader::{ReaderOptions, Record, ShardEvent, read_shard};

/// Why reading a stream's shards cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A shard cannot be read (no such stream, no permission).
    #[error("cannot read shard {shard} of Kinesis stream {stream:?}: {reason}")]
    Shard {
        /// The stream.
        stream: String,
        /// The shard.
        shard: String,
        /// Why.
        reason: String,
    },
    /// The shards cannot be listed.
    #[error("cannot list the shards of Kinesis stream {stream:?}: {reason}")]
    Listing {
        /// The stream.
        stream: String,
        /// Why.
        reason: String,
    },
}

/// A shard being read or finished reading.
#[derive(Debug, Default)]
struct ShardState {
    /// Its number in the tracker.
    index: i32,
    /// Records read so far (the next one's count).
    read: i64,
    /// Sequence numbers by count, of records not checkpointed yet.
    sequences: BTreeMap<i64, String>,
    /// The reader reached the shard's end.
    ended: bool,
}

/// The shards of one stream, their readers, and the checkpoint.
pub struct Ledger {
    stream: String,
    client: Client,
    options: ReaderOptions,
    store: FileStore,
    checkpoint: Checkpoint,
    /// Where shards start on this first start (`None`: there is a checkpoint).
    first: Option<FirstStart>,
    tracker: OffsetTracker,
    shards: BTreeMap<String, ShardState>,
    /// Stops every reader.
    readers: CancellationToken,
    /// The checkpoint changed in a way `save` does not see.
    dirty: bool,
}

impl Ledger {
    /// Opens (and locks) the checkpoint file of `stream` at `path`; with no
    /// checkpoint yet, shards start where `first_start` says.
    pub fn open(
        client: Client,
        stream: &str,
        path: &Path,
        first_start: FirstStart,
        options: ReaderOptions,
    ) -> Result<Ledger, LedgerError> {
        let (store, saved) = FileStore::open(path, stream)?;
        let first = match &saved {
            Some(_) => None,
            None => {
                tracing::info!(checkpoint = %path.display(), start = ?first_start, "no Kinesis checkpoint yet: the shards start where --kinesis-start says");
                Some(first_start)
            }
        };
        Ok(Ledger {
            stream: stream.to_string(),
            client,
            options,
            store,
            checkpoint: saved.unwrap_or_else(|| Checkpoint::new(stream)),
            first,
            tracker: OffsetTracker::new(),
            shards: BTreeMap::new(),
            readers: CancellationToken::new(),
            dirty: false,
        })
    }

    /// The stream.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Lists the shards and starts a reader, sending to `out`, for each one
    /// readable now.
    pub async fn discover(&mut self, out: &mpsc::Sender<ShardEvent>) -> Result<(), LedgerError> {
        let listed = list_shards(&self.client, &self.stream)
            .await
            .map_err(|reason| LedgerError::Listing {
                stream: self.stream.clone(),
                reason,
            })?;
        let reading: BTreeSet<String> = self.shards.keys().cloned().collect();
        for (shard, start) in readable(&listed, &self.checkpoint, &reading, self.first) {
            let index = i32::try_from(self.shards.len()).unwrap_or(i32::MAX);
            self.tracker.assign(index);
            self.shards.insert(
                shard.clone(),
                ShardState {
                    index,
                    ..ShardState::default()
                },
            );
            tracing::info!(shard = %shard, ?start, "reading a shard");
            tokio::spawn(read_shard(
                self.client.clone(),
                self.stream.clone(),
                shard,
                start,
                self.options,
                out.clone(),
                self.readers.child_token(),
            ));
        }
        self.first = None;
        metrics::gauge!(m::SHARDS_READ)
            .set(self.shards.values().filter(|s| !s.ended).count() as f64);
        Ok(())
    }

    /// Numbers `records` just read from `shard`, in order: each one's
    /// position, to start and finish it by. `None` for a shard this ledger
    /// does not read.
    pub fn number(&mut self, shard: &str, records: &[Record]) -> Option<Vec<Position>> {
        let state = self.shards.get_mut(shard)?;
        let mut positions = Vec::with_capacity(records.len());
        for record in records {
            let offset = state.read;
            state.read += 1;
            state.sequences.insert(offset, record.sequence.clone());
            positions.push(Position {
                partition: state.index,
                offset,
            });
        }
        Some(positions)
    }

    /// A record's work begins (its output is sent).
    pub fn start(&mut self, position: Position) -> Ticket {
        self.tracker.start(position.partition, position.offset)
    }

    /// A record's work is done (its output acknowledged).
    pub fn finish(&mut self, ticket: Ticket) {
        self.tracker.finish(ticket);
    }

    /// Records started and not finished.
    pub fn in_flight(&self) -> usize {
        self.tracker.in_flight()
    }

    /// Per shard number, the count of the first record not done with every
    /// earlier one: what the next `save` checkpoints.
    pub fn done_until(&self) -> BTreeMap<i32, i64> {
        self.tracker.committable().into_iter().collect()
    }

    /// A relay's offsets to read back from at start (see
    /// [`Checkpoint::relayed_from`]), as saved.
    pub fn relayed_from(&self) -> &BTreeMap<i32, i64> {
        &self.checkpoint.relayed_from
    }

    /// Whether the checkpoint is past the record `sequence` of `shard`.
    pub fn covers(&self, shard: &str, sequence: &str) -> bool {
        match self.checkpoint.shards.get(shard) {
            Some(ShardPosition::End) => true,
            Some(ShardPosition::After(saved)) => {
                (sequence.len(), sequence) <= (saved.len(), saved.as_str())
            }
            None => false,
        }
    }

    /// Sets the relay's offsets the next `save` writes.
    pub fn set_relayed_from(&mut self, relayed_from: BTreeMap<i32, i64>) {
        if self.checkpoint.relayed_from != relayed_from {
            self.checkpoint.relayed_from = relayed_from;
            self.dirty = true;
        }
    }

    /// `shard`'s reader reached its end.
    pub fn reached_end(&mut self, shard: &str) {
        if let Some(state) = self.shards.get_mut(shard) {
            state.ended = true;
        }
    }

    /// The error for a shard whose reader failed.
    pub fn failed(&self, shard: String, reason: String) -> LedgerError {
        LedgerError::Shard {
            stream: self.stream.clone(),
            shard,
            reason,
        }
    }

    /// Stops every reader.
    pub fn stop_readers(&self) {
        self.readers.cancel();
    }

    /// Moves each shard's checkpoint to its last record done with every
    /// earlier one; records a shard read to its end and wholly done as
    /// ended. Writes the file when it changed. Returns whether a shard
    /// ended now (its children may be readable: discover again).
    pub fn save(&mut self) -> Result<bool, LedgerError> {
        let by_index: BTreeMap<i32, String> = self
            .shards
            .iter()
            .map(|(id, s)| (s.index, id.clone()))
            .collect();
        let done = self.done_until();
        let mut changed = std::mem::take(&mut self.dirty);
        for (&index, &next) in &done {
            let Some(id) = by_index.get(&index) else {
                continue;
            };
            let Some(state) = self.shards.get_mut(id) else {
                continue;
            };
            if let Some(sequence) = state.sequences.get(&(next - 1)).cloned() {
                let position = ShardPosition::After(sequence);
                if self.checkpoint.shards.get(id) != Some(&position) {
                    self.checkpoint.shards.insert(id.clone(), position);
                    changed = true;
                }
                state.sequences = state.sequences.split_off(&(next - 1));
            }
        }
        let mut ended = false;
        for (id, state) in &self.shards {
            let all_done = state.read == 0 || done.get(&state.index) == Some(&state.read);
            if state.ended && all_done && !self.checkpoint.ended(id) {
                self.checkpoint
                    .shards
                    .insert(id.clone(), ShardPosition::End);
                changed = true;
                ended = true;
                tracing::info!(shard = %id, "shard read to its end and done");
            }
        }
        if changed {
            self.store.save(&self.checkpoint)?;
        }
        Ok(ended)
    }
}
