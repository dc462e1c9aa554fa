//! Starting a learner: from its latest snapshot, up to the end of the
//! model topic, before any rating is read.
//!
//! The model topic, not the snapshot, is the record of what was learnt, so
//! a learner first replays it from the snapshot's position: its own
//! published states are applied again, a newer batch model announced there
//! is switched to, and the ratings each state came from move the positions
//! the ratings are read from ([`Positions::replayed`]). To know where the
//! topic ends, the learner writes a marker of its own and reads up to it:
//! a message it wrote is one it is sure to read, whatever else the topic
//! holds. Reading ratings before the end would learn some of them twice.
//!
//! [`Positions::replayed`]: super::positions::Positions::replayed

use std::sync::Arc;

use rdkafka::Message;
use rdkafka::message::BorrowedMessage;
use recstream_core::Model;
use recstream_core::online::{OnlineLearner, PrequentialStats};
use tokio_util::sync::CancellationToken;

use super::positions::Positions;
use super::publish::Publisher;
use super::snapshot::load_latest;
use super::{Learner, LearnerConfig, LearnerError, LearnerSummary, ReadErrors};
use crate::kafka::LoggingContext;
use crate::model_topic::{ModelAnnouncement, ModelMessage};
use crate::publish::fetch_model;
use crate::topics;

impl Learner {
    /// A learner on the latest snapshot in its folder (`initial` without
    /// one), with its clients created and nothing read or written yet.
    pub(super) fn new(config: LearnerConfig, initial: Model) -> Result<Self, LearnerError> {
        let start = load_latest(&config)?.unwrap_or(initial);
        let positions = Positions::of(&start);
        let model = OnlineLearner::new(start, config.update_items);
        let publisher = Publisher::new(&config)?;
        // Both readers are private to this start: their groups hold no
        // offsets, the positions above say where they read.
        let nonce = format!("{:016x}", rand::random::<u64>());
        let follower = config
            .kafka
            .reader(&format!("recstream-learner-{nonce}"))
            // As large as the largest update the publisher may write.
            .set("max.partition.fetch.bytes", "4194304")
            .create_with_context(LoggingContext::new("learner-follow"))?;
        let ratings = config
            .kafka
            .reader(&format!("recstream-learner-ratings-{nonce}"))
            .create_with_context(LoggingContext::new("learner-ratings"))?;
        Ok(Learner {
            config,
            model,
            positions,
            publisher,
            follower: Arc::new(follower),
            ratings: Arc::new(ratings),
            nonce,
            stats: PrequentialStats::default(),
            reported: 0,
            summary: LearnerSummary::default(),
            read_errors: ReadErrors::default(),
        })
    }

    /// Replays the model topic up to a marker written now. `false` when
    /// `shutdown` came first: then nothing was learnt, and there is nothing
    /// to save.
    pub(super) async fn catch_up(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<bool, LearnerError> {
        let marker = ModelMessage::Marker {
            nonce: self.nonce.clone(),
        };
        let marker_offset = self.publisher.marker(&marker).await?;
        topics::assign_all(&*self.follower, &self.config.model_topic, 1, |_| {
            self.positions.model_start()
        })?;
        // A local handle: a message borrows the consumer, and replaying it
        // changes `self`.
        let follower = Arc::clone(&self.follower);
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                next = follower.recv() => next,
            };
            match next {
                Ok(message) => {
                    self.replay(&message).await;
                    if message.offset() >= marker_offset {
                        break;
                    }
                }
                Err(e) => self.read_errors.report(&self.config.model_topic, &e),
            }
        }
        self.positions.caught_up(marker_offset);
        tracing::info!(replayed = self.summary.replayed, version = %self.model.recommender().version(), "caught up with the model topic");
        Ok(true)
    }

    /// Applies one message of the model topic read while catching up.
    async fn replay(&mut self, message: &BorrowedMessage<'_>) {
        let Some(Ok(decoded)) = message.payload().map(ModelMessage::decode) else {
            return;
        };
        match decoded {
            ModelMessage::User {
                seq,
                base,
                state,
                rated,
                source,
                ..
            } => {
                self.model.replay_user(&base, seq, &state, &rated);
                if let Some(source) = source {
                    self.positions.replayed(source);
                }
                self.summary.replayed += 1;
            }
            ModelMessage::Item { seq, base, state } => {
                self.model.replay_item(&base, seq, &state);
                self.summary.replayed += 1;
            }
            ModelMessage::Model(announcement) if announcement.id != self.model.base_id() => {
                self.switch_model(&announcement).await;
            }
            _ => {}
        }
    }

    /// Switches to a newly announced batch model, keeping the current one
    /// (with an error in the log) when it cannot be fetched or verified.
    pub(super) async fn switch_model(&mut self, announcement: &ModelAnnouncement) {
        match fetch_model(&self.config.kafka, announcement).await {
            Ok(model) => {
                tracing::info!(model = %announcement.id, "learning on top of the newly announced batch model");
                self.model = OnlineLearner::new(model, self.config.update_items);
            }
            Err(e) => {
                tracing::error!(model = %announcement.id, "refusing the announced model: {e}; learning continues on {}", self.model.base_id());
            }
        }
    }
}
