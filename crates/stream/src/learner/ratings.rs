//! Learning from ratings: each rating of an owned partition learnt or
//! refused, and the accuracy reported.
//!
//! Every rating ends in one output: its user's state queued for the model
//! topic's partition of the same number, naming the rating it came from and
//! carrying its item delta (also added to the deltas handed over at the next
//! sync), or a dead letter with the reason and the original bytes. A bad
//! rating never stops the learner; only output that cannot be delivered
//! does. A rating of a partition this learner does not own (yet) is not
//! read: the group gave it to another learner, or it is still being
//! restored, after which it is read again from the right place.
//!
//! On a ratings topic of several partitions, a rating not keyed by its uid
//! is refused: its user's ratings could be on several partitions, learnt
//! by several learners, and workers would end with whichever state of the
//! user they read last.

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;

use super::partitions::TailDelta;
use super::{Learner, LearnerError};
use crate::metrics as m;
use crate::model_topic::{Source, user_message};
use crate::wire::{self, Origin, RejectCode, Rejection};

impl Learner {
    /// Learns one rating and queues its user's state, or dead-letters it.
    pub(super) async fn on_rating(
        &mut self,
        next: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), LearnerError> {
        let Some(message) = self.read_errors.message(&self.config.ratings_topic, next) else {
            return Ok(());
        };
        let source = Source {
            partition: message.partition(),
            offset: message.offset(),
        };
        let Some(owned) = self.owned.get(&source.partition) else {
            return Ok(());
        };
        if self.ratings.context().revoking(source.partition) || owned.awaiting.is_some() {
            // Not ours any more, or read before the pause: read again later.
            return Ok(());
        }
        if owned.last_source.is_some_and(|last| source.offset <= last) {
            // Learnt and published already (read again after a seek).
            return Ok(());
        }
        let partitions = usize::try_from(self.partitions).unwrap_or(1);
        let learnt = wire::parse_keyed_rating(
            message.key(),
            message.payload(),
            self.config.max_rating_bytes,
            partitions,
        )
        .and_then(|event| {
            self.model
                .learn(event.uid.as_str(), event.iid.as_str(), event.rating)
                .map_err(|e| Rejection {
                    code: RejectCode::InvalidRating,
                    message: e.to_string(),
                })
        });
        let (update, prequential) = match learnt {
            Ok(learnt) => learnt,
            Err(rejection) => return self.refuse(&message, rejection).await,
        };
        self.stats.record(&prequential);
        self.summary.learnt += 1;
        metrics::counter!(m::RATINGS_LEARNT).increment(1);
        let Some(owned) = self.owned.get_mut(&source.partition) else {
            return Ok(());
        };
        owned.seq += 1;
        owned.last_source = Some(source.offset);
        let state = user_message(
            &update,
            owned.seq,
            Some(source),
            message.timestamp().to_millis(),
        );
        if let Some(delta) = &update.item_delta {
            self.pending.record(source.partition, source.offset, delta);
            let tail = TailDelta {
                base: update.base_id.clone(),
                delta: delta.clone(),
            };
            owned.tail.insert(source.offset, tail);
        }
        self.publisher.update(source.partition, &state).await
    }

    /// Sends a refused rating to the dead-letter topic, with the reason and
    /// its original bytes. Its position does not move: only published
    /// states move positions, so after a restart it may be refused again.
    async fn refuse(
        &mut self,
        message: &BorrowedMessage<'_>,
        rejection: Rejection,
    ) -> Result<(), LearnerError> {
        self.summary.dead_letters += 1;
        metrics::counter!(m::DEAD_LETTERS, "reason" => rejection.code.as_str()).increment(1);
        let origin = Origin {
            topic: &self.config.ratings_topic,
            partition: message.partition(),
            offset: message.offset(),
        };
        let letter = wire::encode_dead_letter(&rejection, &origin, message.payload());
        let key = message.key().map(<[u8]>::to_vec).unwrap_or_default();
        self.publisher.dead_letter(key, letter).await
    }

    /// Publishes the prequential accuracy so far as metrics, and logs it
    /// when ratings were learnt since the last report.
    pub(super) fn on_tick(&mut self) {
        metrics::gauge!(m::PREQUENTIAL_RMSE).set(self.stats.rmse());
        metrics::gauge!(m::PREQUENTIAL_HIT_RATE).set(self.stats.hit_rate());
        if self.stats.count > self.reported {
            self.reported = self.stats.count;
            tracing::info!(
                learnt = self.summary.learnt,
                seq = self.total_seq(),
                rmse = format!("{:.4}", self.stats.rmse()),
                hit_rate_at_10 = format!("{:.4}", self.stats.hit_rate()),
                "prequential accuracy so far"
            );
        }
    }
}
