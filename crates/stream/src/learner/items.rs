//! Items shared between learners: deltas handed over, merged by the owner
//! of each item's partition, and the checkpoints that say how far both got.
//!
//! Every `--item-sync-ms` a learner hands over what its ratings changed in
//! items since the last time, one batch per ratings partition it owns, cut
//! into one message per item partition of the deltas topic. The learner
//! that owns an item partition merges each batch into the item states
//! (counting a batch an item already holds once, see the core's
//! `ItemLedger`) and publishes them on the model topic's partition of the
//! same number.
//!
//! Two checkpoints on the model topic say how far this went, and are
//! written only once every message they cover is acknowledged (a
//! generation of the publisher): `forwarded` (the deltas of a ratings
//! partition up to a rating were handed over; a learner taking it over
//! hands over only the deltas published after it) and `merged` (the item
//! states hold the deltas partition up to an offset; merging resumes after
//! it). A checkpoint also stores the ratings position in the group's
//! committed offsets, so that the usual Kafka tools show the learners' lag.

use std::collections::BTreeMap;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use recstream_core::online::{DeltaBatch, ItemDelta};

use super::partitions::PartitionLog;
use super::{Learner, LearnerError};
use crate::metrics as m;
use crate::model_topic::{DeltaMessage, ModelMessage, item_partition};

/// Positions to write down once every message of `generation` (and
/// before) is acknowledged.
#[derive(Debug, Clone, Default)]
pub(super) struct Checkpoint {
    generation: u64,
    /// Per ratings partition: deltas handed over up to this rating.
    forwarded: Vec<(i32, i64)>,
    /// Per item partition: deltas merged up to this offset.
    merged: Vec<(i32, i64)>,
    /// Per ratings partition: the last rating learnt and published.
    learnt: Vec<(i32, i64)>,
}

/// Largest delta message aimed at: half of Kafka's default 1 MB limit.
const DELTA_MESSAGE_BYTES: usize = 512 * 1024;

/// Item deltas in one message: a delta's JSON is at most about 16 bytes a
/// factor (a float, its sign and a comma) plus its id and fields.
fn deltas_per_message(factors: usize) -> usize {
    (DELTA_MESSAGE_BYTES / (16 * factors + 256)).max(1)
}

impl Learner {
    /// Hands over the item deltas gathered since the last sync, and
    /// queues the checkpoint that will say so.
    pub(super) async fn sync(&mut self) -> Result<(), LearnerError> {
        let mut checkpoint = Checkpoint::default();
        for batch in self.pending.take() {
            if self.owned.contains_key(&batch.source) {
                checkpoint.forwarded.push((batch.source, batch.through));
                self.send_batch(batch).await?;
            }
        }
        for (&p, owned) in &mut self.owned {
            if owned.merged != owned.merge_checkpointed
                && let Some(offset) = owned.merged
            {
                owned.merge_checkpointed = Some(offset);
                checkpoint.merged.push((p, offset));
            }
            if owned.last_source != owned.stored
                && let Some(offset) = owned.last_source
            {
                owned.stored = Some(offset);
                checkpoint.learnt.push((p, offset));
            }
        }
        self.queue_checkpoint(checkpoint).await
    }

    /// Hands over, rating by rating, the deltas a partition's previous owner
    /// published but may not have handed over (see `partitions`).
    pub(super) async fn hand_over_tail(
        &mut self,
        partition: i32,
        log: &PartitionLog,
    ) -> Result<(), LearnerError> {
        if !self.config.update_items {
            return Ok(());
        }
        let mut last = None;
        for (&offset, tail) in &log.tail {
            if tail.base == self.model.base_id() {
                let batch = DeltaBatch {
                    source: partition,
                    through: offset,
                    deltas: vec![tail.delta.clone()],
                };
                self.send_batch(batch).await?;
                last = Some(offset);
            }
        }
        if let Some(through) = last {
            let checkpoint = Checkpoint {
                forwarded: vec![(partition, through)],
                ..Checkpoint::default()
            };
            self.queue_checkpoint(checkpoint).await?;
        }
        Ok(())
    }

    /// Sends `batch` as messages to each item partition, each small enough
    /// for a broker's default message size limit (a merge counts each item
    /// of a batch on its own, so a batch can be cut anywhere).
    async fn send_batch(&mut self, batch: DeltaBatch) -> Result<(), LearnerError> {
        let mut by_partition: BTreeMap<i32, Vec<ItemDelta>> = BTreeMap::new();
        for delta in batch.deltas {
            let q = item_partition(&delta.id, self.partitions);
            by_partition.entry(q).or_default().push(delta);
        }
        let per_message = deltas_per_message(self.model.recommender().model().svd.n_factors);
        for (q, deltas) in by_partition {
            for chunk in deltas.chunks(per_message) {
                let message = DeltaMessage {
                    base: self.model.base_id().to_string(),
                    batch: DeltaBatch {
                        source: batch.source,
                        through: batch.through,
                        deltas: chunk.to_vec(),
                    },
                };
                self.publisher.deltas(q, &message).await?;
            }
        }
        Ok(())
    }

    /// Merges one batch of deltas for the items of an owned partition, and
    /// publishes the items' new states.
    pub(super) async fn on_deltas(
        &mut self,
        next: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), LearnerError> {
        let Some(message) = self.read_errors.message(&self.config.deltas_topic, next) else {
            return Ok(());
        };
        let (q, offset) = (message.partition(), message.offset());
        let Some(owned) = self.owned.get(&q) else {
            return Ok(());
        };
        if owned.merged.is_some_and(|merged| offset <= merged) {
            return Ok(());
        }
        match message.payload().map(DeltaMessage::decode) {
            Some(Ok(deltas)) if deltas.base == self.model.base_id() => {
                self.merge(q, deltas.batch).await?;
            }
            Some(Ok(deltas)) => {
                metrics::counter!(m::ITEM_DELTAS_DROPPED, "reason" => "other_model").increment(1);
                tracing::debug!(model = %deltas.base, "dropping item deltas for another batch model");
            }
            Some(Err(e)) => {
                metrics::counter!(m::ITEM_DELTAS_DROPPED, "reason" => "unreadable").increment(1);
                tracing::warn!(
                    partition = q,
                    offset,
                    "skipping an unreadable item-deltas message: {e}"
                );
            }
            None => {}
        }
        if let Some(owned) = self.owned.get_mut(&q) {
            owned.merged = Some(offset);
        }
        Ok(())
    }

    async fn merge(&mut self, q: i32, mut batch: DeltaBatch) -> Result<(), LearnerError> {
        let partitions = self.partitions;
        let before = batch.deltas.len();
        batch
            .deltas
            .retain(|d| item_partition(&d.id, partitions) == q);
        if batch.deltas.len() < before {
            metrics::counter!(m::ITEM_DELTAS_DROPPED, "reason" => "wrong_partition")
                .increment((before - batch.deltas.len()) as u64);
        }
        for merged in self.ledger.merge(&batch, &self.base) {
            let Some(owned) = self.owned.get_mut(&q) else {
                return Ok(());
            };
            owned.item_seq += 1;
            let state = ModelMessage::Item {
                seq: owned.item_seq,
                base: self.model.base_id().to_string(),
                state: merged.state.clone(),
                through: merged.through.clone(),
            };
            self.publisher.update(q, &state).await?;
            metrics::counter!(m::ITEMS_MERGED).increment(1);
            self.take_merged(merged);
        }
        Ok(())
    }

    /// Queues `checkpoint` for when everything sent so far is acknowledged.
    async fn queue_checkpoint(&mut self, mut checkpoint: Checkpoint) -> Result<(), LearnerError> {
        let empty = checkpoint.forwarded.is_empty()
            && checkpoint.merged.is_empty()
            && checkpoint.learnt.is_empty();
        if !empty {
            checkpoint.generation = self.publisher.advance();
            self.checkpoints.push_back(checkpoint);
        }
        self.write_checkpoints().await
    }

    /// Writes the checkpoints whose messages are all acknowledged, for the
    /// partitions still owned.
    pub(super) async fn write_checkpoints(&mut self) -> Result<(), LearnerError> {
        while let Some(front) = self.checkpoints.front() {
            if !self.publisher.acknowledged(front.generation) {
                break;
            }
            let Some(checkpoint) = self.checkpoints.pop_front() else {
                break;
            };
            let base = self.model.base_id().to_string();
            for (partition, through) in checkpoint.forwarded {
                if let Some(owned) = self.owned.get_mut(&partition) {
                    owned.forwarded = owned.forwarded.max(Some(through));
                    owned.tail = owned.tail.split_off(&(through + 1));
                    let message = ModelMessage::Forwarded {
                        base: base.clone(),
                        partition,
                        through,
                    };
                    self.publisher.update(partition, &message).await?;
                }
            }
            for (partition, offset) in checkpoint.merged {
                if self.owned.contains_key(&partition) {
                    let message = ModelMessage::Merged {
                        base: base.clone(),
                        partition,
                        offset,
                    };
                    self.publisher.update(partition, &message).await?;
                }
            }
            for (partition, offset) in checkpoint.learnt {
                if self.owned.contains_key(&partition) {
                    // Only monitoring reads the committed offsets; a partition
                    // revoked meanwhile refuses the store, which is fine.
                    let _ = self.ratings.store_offset(
                        &self.config.ratings_topic,
                        partition,
                        offset + 1,
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use recstream_core::RawId;

    use super::*;

    #[test]
    fn a_full_delta_message_stays_under_the_size_aimed_at() {
        for factors in [1, 16, 100, 300] {
            let per = deltas_per_message(factors);
            let delta = ItemDelta {
                id: RawId::new("an-item-with-a-long-id-0123456789"),
                bias: -1.234_567_9e-7,
                factors: vec![-1.234_567_9e-7; factors],
                count: u32::MAX,
            };
            let message = DeltaMessage {
                base: "0123456789abcdef".into(),
                batch: DeltaBatch {
                    source: i32::MAX,
                    through: i64::MAX,
                    deltas: vec![delta; per],
                },
            };
            let bytes = message.encode().len();
            assert!(
                bytes <= DELTA_MESSAGE_BYTES,
                "{factors} factors: {bytes} bytes"
            );
        }
    }
}
