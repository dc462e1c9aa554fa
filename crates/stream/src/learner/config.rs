//! What a learner is told: its topics, where its snapshots go, how often,
//! and how large a rating may be.
//!
//! Kept apart from the loop so that the settings are checked once, before
//! any client is created ([`LearnerConfig::check`]): a learner that would
//! read its own output, or refuse every rating, is refused at start rather
//! than found out later.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Checked, ConfigError, require_names};
use crate::kafka::KafkaSettings;
use crate::metrics::{Component, Health};
use crate::wire;

/// What a learner needs besides the model.
#[derive(Debug, Clone)]
pub struct LearnerConfig {
    /// Brokers and client overrides.
    pub kafka: KafkaSettings,
    /// Topic the ratings arrive on.
    pub ratings_topic: String,
    /// Topic the model updates go to, partitioned like the ratings topic.
    pub model_topic: String,
    /// Topic the item deltas travel on between learners, partitioned like
    /// the ratings topic (unused with items frozen).
    pub deltas_topic: String,
    /// Consumer group the learners share the ratings partitions in.
    pub group_id: String,
    /// How often item deltas are handed over to the items' owners.
    pub item_sync: Duration,
    /// Topic invalid ratings go to.
    pub dlq_topic: String,
    /// Where snapshots are written (`latest.rsm`), and read on start.
    pub snapshot_dir: Option<PathBuf>,
    /// How often to write a snapshot.
    pub snapshot_every: Duration,
    /// Update item factors too (biases always).
    pub update_items: bool,
    /// Ratings larger than this are dead-lettered.
    pub max_rating_bytes: usize,
    /// Set ready (`/readyz`) once the learner has caught up with the model
    /// topic and consumes ratings; not ready again when it stops.
    pub health: Arc<Health>,
}

impl LearnerConfig {
    /// Defaults: `rating-events` in, `model-updates` out, `item-deltas`
    /// between learners, `rating-events-dlq` for bad ratings, group
    /// `recstream-learn`, item deltas handed over every 100 ms, a snapshot a
    /// minute, items learnt.
    pub fn new(kafka: KafkaSettings) -> Self {
        LearnerConfig {
            kafka,
            ratings_topic: "rating-events".into(),
            model_topic: "model-updates".into(),
            deltas_topic: "item-deltas".into(),
            group_id: "recstream-learn".into(),
            item_sync: Duration::from_millis(100),
            dlq_topic: "rating-events-dlq".into(),
            snapshot_dir: None,
            snapshot_every: Duration::from_secs(60),
            update_items: true,
            max_rating_bytes: wire::DEFAULT_MAX_REQUEST_BYTES,
            health: Arc::new(Health::new(Component::Learner)),
        }
    }

    /// Refuses settings that could only fail later: empty topic names, a
    /// learner that would read its own updates or dead letters, a zero
    /// rating size limit or snapshot interval. [`run`](super::run) takes only
    /// what this returns.
    pub fn check(self) -> Result<Checked<Self>, ConfigError> {
        self.problems()?;
        Ok(Checked::new(self))
    }

    fn problems(&self) -> Result<(), ConfigError> {
        require_names(&[
            ("--ratings-topic", &self.ratings_topic),
            ("--model-topic", &self.model_topic),
            ("--ratings-dlq-topic", &self.dlq_topic),
            ("--item-deltas-topic", &self.deltas_topic),
            ("--group-id", &self.group_id),
        ])?;
        let others = [&self.ratings_topic, &self.model_topic, &self.dlq_topic];
        if others.contains(&&self.deltas_topic) {
            return Err(ConfigError::new(
                "--item-deltas-topic",
                "must differ from the ratings, model and dead-letter topics",
            ));
        }
        if self.item_sync.is_zero() {
            return Err(ConfigError::new("--item-sync-ms", "must be at least 1"));
        }
        if self.model_topic == self.ratings_topic || self.dlq_topic == self.ratings_topic {
            return Err(ConfigError::new(
                "--ratings-topic",
                "must differ from the model and dead-letter topics: the learner would read its own output",
            ));
        }
        if self.model_topic == self.dlq_topic {
            return Err(ConfigError::new(
                "--ratings-dlq-topic",
                "must differ from the model topic",
            ));
        }
        if self.max_rating_bytes == 0 {
            return Err(ConfigError::new("max_rating_bytes", "must be at least 1"));
        }
        if self.snapshot_every.is_zero() {
            return Err(ConfigError::new(
                "--snapshot-every",
                "must be at least 1 second",
            ));
        }
        Ok(())
    }
}
