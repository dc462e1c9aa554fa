//! Learning from ratings: the ratings topic taken from where the catch-up
//! says, each rating learnt or refused, and the accuracy reported.
//!
//! Every rating ends in one output: its item and user states queued for the
//! model topic, each naming the rating it came from, or a dead letter with
//! the reason and the original bytes. A bad rating never stops the learner;
//! only output that cannot be delivered does. A learnt rating's position
//! moves as soon as its states are queued, since the snapshot that saves it
//! waits for them to be acknowledged first.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;

use super::{Learner, LearnerError, Ready};
use crate::kafka;
use crate::metrics as m;
use crate::model_topic::{Source, update_messages};
use crate::topics;
use crate::wire::{self, Origin, RejectCode, Rejection};

impl Learner {
    /// Takes every partition of the ratings topic, each right after its
    /// last published rating. The learner is ready from then on, for as
    /// long as the returned guard lives.
    pub(super) async fn assign(&mut self) -> Result<Ready, LearnerError> {
        let consumer = Arc::clone(&self.ratings);
        let topic = self.config.ratings_topic.clone();
        let metadata =
            kafka::blocking(format!("fetching the partitions of {topic:?}"), move || {
                consumer.fetch_metadata(Some(&topic), Duration::from_secs(30))
            })
            .await??;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len());
        topics::assign_all(
            &*self.ratings,
            &self.config.ratings_topic,
            partitions,
            |p| self.positions.ratings_start(p),
        )?;
        tracing::info!(ratings = %self.config.ratings_topic, partitions, updates = %self.config.model_topic, "learning");
        Ok(Ready::set(&self.config.health))
    }

    /// Learns one rating and queues its states, or dead-letters it.
    pub(super) async fn on_rating(
        &mut self,
        next: KafkaResult<BorrowedMessage<'_>>,
    ) -> Result<(), LearnerError> {
        let message = match next {
            Ok(message) => message,
            Err(e) => {
                self.read_errors.report(&self.config.ratings_topic, &e);
                return Ok(());
            }
        };
        let learnt =
            wire::parse_rating(message.payload(), self.config.max_rating_bytes).and_then(|event| {
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
        let source = Source {
            partition: message.partition(),
            offset: message.offset(),
        };
        for state in update_messages(&update, Some(source), message.timestamp().to_millis()) {
            self.publisher.update(&state).await?;
        }
        self.positions.learnt(source);
        Ok(())
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
                seq = self.model.seq(),
                rmse = format!("{:.4}", self.stats.rmse()),
                hit_rate_at_10 = format!("{:.4}", self.stats.hit_rate()),
                "prequential accuracy so far"
            );
        }
    }
}
