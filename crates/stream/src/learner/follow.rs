//! The model topic, read all the time: other learners' states applied, every
//! partition's log kept, new batch models switched to.
//!
//! A learner reads every partition of the model topic, its own included.
//! Each message goes into its partition's log (see `partitions`). The states
//! of a partition this learner owns are its own, already in its model (and
//! maybe older than what it holds now) and in what it keeps of the
//! partition's log (`Owned::log`), so they are passed over undecoded (most
//! of a lone learner's reading). Everything else on its partitions (batch
//! model announcements, markers, checkpoints) is read as from any other. The
//! others' are applied: user states as they are, merged item states into the
//! ledger and, with this learner's own changes not merged yet, into its view
//! of the item. A newer batch model announced is fetched and learnt on:
//! from scratch for a model published by hand, on top of the ratings it
//! holds for a retrained one, whose announcement says where they end.

use rdkafka::Message;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use recstream_core::online::{ItemBase, ItemLedger, MergedItem, OnlineLearner, PendingDeltas};

use super::{Learner, LearnerError};
use crate::metrics as m;
use crate::model_topic::{ModelAnnouncement, ModelMessage};
use crate::publish::fetch_model;

impl Learner {
    /// One message of the model topic, or an error reading it (logged; the
    /// client retries).
    pub(super) async fn on_model_message(
        &mut self,
        next: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), LearnerError> {
        let Some(message) = self.read_errors.message(&self.config.model_topic, next) else {
            return Ok(());
        };
        let (partition, offset) = (message.partition(), message.offset());
        let log = self.logs.entry(partition).or_default();
        let ours = self.owned.contains_key(&partition);
        if ours && message.key().is_some_and(is_state_key) {
            // This learner's own state, read back: nothing it does not know.
            log.skip(offset);
            return Ok(());
        }
        let Some(Ok(decoded)) = message.payload().map(ModelMessage::decode) else {
            log.skip(offset);
            return Ok(());
        };
        log.read(offset, &decoded);
        match decoded {
            ModelMessage::User {
                base, state, rated, ..
            } if !ours => {
                self.model.replay_user(&base, &state, &rated);
                self.summary.replayed += 1;
            }
            ModelMessage::Item {
                base,
                state,
                through,
                ..
            } if !ours && base == self.model.base_id() => {
                self.take_merged(MergedItem { state, through });
                self.summary.replayed += 1;
            }
            ModelMessage::Model(announcement) => {
                self.on_announcement(partition, announcement).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// A batch model announced on `partition`. A new one is fetched and
    /// learnt on; each partition this learner owns then learns on it only
    /// from the model's announcement in that partition on (see
    /// `await_announcement`), where its log starts over: after the ratings
    /// the model holds, for a retrained model.
    async fn on_announcement(
        &mut self,
        partition: i32,
        announcement: ModelAnnouncement,
    ) -> Result<(), LearnerError> {
        if announcement.id != self.model.base_id() {
            if !self.switch_model(&announcement).await {
                return Ok(());
            }
            self.announced = Some(announcement.clone());
            self.note_announcement(partition, &announcement);
            let owned: Vec<i32> = self.owned.keys().copied().collect();
            for p in owned {
                self.await_announcement(p).await?;
            }
            return Ok(());
        }
        self.announced = Some(announcement.clone());
        self.note_announcement(partition, &announcement);
        let awaited = self
            .owned
            .get(&partition)
            .is_some_and(|owned| owned.awaiting.is_some());
        if awaited {
            self.restart(partition).await?;
        }
        Ok(())
    }

    /// Puts the announcement in `partition`'s log.
    fn note_announcement(&mut self, partition: i32, announcement: &ModelAnnouncement) {
        let resumes_at = announcement.resumes_at(&self.config.ratings_topic, partition);
        self.logs
            .entry(partition)
            .or_default()
            .announced(&announcement.id, resumes_at);
    }

    /// A merged item state, this learner's or another's: into the ledger,
    /// and into the learner's view of the item with its own changes that
    /// the merge does not hold yet.
    pub(super) fn take_merged(&mut self, merged: MergedItem) {
        let id = &merged.state.id;
        self.pending.merged(id, &merged.through);
        let pending = self.pending.pending(id);
        self.model.set_item_view(&merged.state, pending.as_ref());
        self.ledger.restore(merged);
    }

    /// Switches to a newly announced batch model; keeps the current one
    /// (with an error in the log, and `false`) when it cannot be fetched or
    /// verified. Item deltas, merges and the checkpoints not written yet
    /// start over on the new model.
    pub(super) async fn switch_model(&mut self, announcement: &ModelAnnouncement) -> bool {
        match fetch_model(&self.config.kafka, announcement).await {
            Ok(model) => {
                tracing::info!(model = %announcement.id, retrained = announcement.covers.is_some(), "learning on top of the newly announced batch model");
                self.base = ItemBase::of(&model);
                self.ledger = ItemLedger::default();
                self.pending = PendingDeltas::default();
                self.checkpoints.clear();
                self.model = OnlineLearner::new(model, self.config.update_items);
                metrics::counter!(m::LEARNER_MODEL_SWITCHES).increment(1);
                true
            }
            Err(e) => {
                tracing::error!(model = %announcement.id, "refusing the announced model: {e}; learning continues on {}", self.model.base_id());
                false
            }
        }
    }
}

/// Whether a model-topic key is a user's or an item's state.
fn is_state_key(key: &[u8]) -> bool {
    key.starts_with(b"user:") || key.starts_with(b"item:")
}
