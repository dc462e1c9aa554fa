//! Starting a learner: its clients, the topics' partitions checked, and the
//! model topic read to its end before the learner joins its group.
//!
//! The model topic is partitioned like the ratings topic, and so is the
//! item-deltas topic; a learner refuses to start otherwise, since it could
//! not put a user's state where the user's next learner will look for it.
//! It starts from its latest snapshot (or the batch model), then reads every
//! partition of the model topic from where the snapshot's logs end, up to a
//! marker it writes to each: a message it wrote is one it is sure to read,
//! whatever else the partition holds. Only then does it join the group and
//! take ratings partitions (see `ownership`).

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::Offset;
use rdkafka::consumer::Consumer;
use recstream_core::Model;
use recstream_core::online::{
    ItemBase, ItemLedger, OnlineLearner, PendingDeltas, PrequentialStats,
};
use tokio_util::sync::CancellationToken;

use super::context::LearnerContext;
use super::partitions::ResumeState;
use super::publish::Publisher;
use super::snapshot::load_latest;
use super::{Learner, LearnerConfig, LearnerError, LearnerSummary, ReadErrors, Ready};
use crate::kafka::LoggingContext;
use crate::model_topic::ModelMessage;
use crate::topics;

impl Learner {
    /// A learner on the latest snapshot in its folder (`initial` without
    /// one), with its clients created and the topics checked; nothing read
    /// or written yet.
    pub(super) fn new(
        config: LearnerConfig,
        initial: Model,
        partitions: i32,
    ) -> Result<Self, LearnerError> {
        let start = load_latest(&config)?.unwrap_or(initial);
        let resume: ResumeState = start
            .meta
            .online
            .as_ref()
            .and_then(|o| o.resume.clone())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        // A snapshot's item rows are the merged states (see `snapshot`), so
        // the items it has never merged are as the batch model has them.
        let base = ItemBase::of(&start);
        let mut ledger = ItemLedger::default();
        resume
            .items
            .into_iter()
            .for_each(|item| ledger.restore(item));
        let model = OnlineLearner::new(start, config.update_items);
        let publisher = Publisher::new(&config)?;
        // The readers of the model and deltas topics are private to this
        // start: their groups hold no offsets, the logs say where they read.
        let nonce = format!("{:016x}", rand::random::<u64>());
        let follower = config
            .kafka
            .reader(&format!("recstream-learner-{nonce}"))
            // As large as the largest update the publisher may write.
            .set("max.partition.fetch.bytes", "4194304")
            .create_with_context(LoggingContext::new("learner-follow"))?;
        let deltas = config
            .kafka
            .reader(&format!("recstream-learner-deltas-{nonce}"))
            .set("max.partition.fetch.bytes", "4194304")
            .create_with_context(LoggingContext::new("learner-deltas"))?;
        let context = LearnerContext::new(config.ratings_topic.clone(), publisher.fence());
        let ratings = config
            .kafka
            .consumer(&config.group_id)
            .create_with_context(context)?;
        Ok(Learner {
            partitions,
            model,
            base,
            ledger,
            pending: PendingDeltas::default(),
            announced: None,
            logs: (0..partitions)
                .map(|p| (p, resume.partitions.get(&p).cloned().unwrap_or_default()))
                .collect(),
            owned: BTreeMap::new(),
            checkpoints: Default::default(),
            publisher,
            follower: Arc::new(follower),
            ratings: Arc::new(ratings),
            deltas: Arc::new(deltas),
            nonce,
            stats: PrequentialStats::default(),
            reported: 0,
            summary: LearnerSummary::default(),
            read_errors: ReadErrors::default(),
            config,
        })
    }

    /// Reads every partition of the model topic up to a marker written now.
    /// `false` when `shutdown` came first: then nothing was learnt, and
    /// there is nothing to save.
    pub(super) async fn catch_up(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<bool, LearnerError> {
        let mut markers = BTreeMap::new();
        for partition in 0..self.partitions {
            markers.insert(partition, self.marker(partition).await?);
        }
        let logs = &self.logs;
        topics::assign_all(
            &*self.follower,
            &self.config.model_topic,
            self.partitions as usize,
            |p| {
                logs.get(&p)
                    .and_then(|log| log.next)
                    .map_or(Offset::Beginning, Offset::Offset)
            },
        )?;
        if !self.read_past(&markers, shutdown).await? {
            return Ok(false);
        }
        tracing::info!(replayed = self.summary.replayed, partitions = self.partitions, version = %self.model.recommender().version(), "caught up with the model topic");
        Ok(true)
    }

    /// Writes a marker to `partition` of the model topic; its offset.
    pub(super) async fn marker(&mut self, partition: i32) -> Result<i64, LearnerError> {
        let marker = ModelMessage::Marker {
            nonce: self.nonce.clone(),
        };
        self.publisher.marker(partition, &marker).await
    }

    /// Reads the model topic until each partition in `markers` is past its
    /// marker; `false` when `shutdown` came first.
    pub(super) async fn read_past(
        &mut self,
        markers: &BTreeMap<i32, i64>,
        shutdown: &CancellationToken,
    ) -> Result<bool, LearnerError> {
        let follower = Arc::clone(&self.follower);
        loop {
            let behind = markers.iter().any(|(p, &marker)| {
                self.logs
                    .get(p)
                    .and_then(|log| log.next)
                    .is_none_or(|next| next <= marker)
            });
            if !behind {
                return Ok(true);
            }
            let next = tokio::select! {
                _ = shutdown.cancelled() => return Ok(false),
                next = follower.recv() => next,
            };
            self.on_model_message(next).await?;
        }
    }

    /// Joins the learners' group on the ratings topic. The learner is ready
    /// from then on, for as long as the returned guard lives.
    pub(super) fn join(&mut self) -> Result<Ready, LearnerError> {
        self.ratings.subscribe(&[&self.config.ratings_topic])?;
        tracing::info!(ratings = %self.config.ratings_topic, group = %self.config.group_id, partitions = self.partitions, updates = %self.config.model_topic, "learning");
        Ok(Ready::set(&self.config.health))
    }
}

/// The partition count of the ratings topic, after checking that the
/// model topic (and the deltas topic, unless items are frozen) has the same;
/// `None` when `shutdown` came first (a topic may be waited for).
pub(super) async fn check_partitions(
    config: &LearnerConfig,
    shutdown: &CancellationToken,
) -> Result<Option<i32>, LearnerError> {
    let mut topics = vec![&config.ratings_topic, &config.model_topic];
    if config.update_items {
        topics.push(&config.deltas_topic);
    }
    let mut counts = Vec::with_capacity(topics.len());
    for topic in topics {
        match topics::wait_for_partitions(&config.kafka, topic, shutdown).await {
            Ok(Some(n)) => counts.push((topic, n)),
            Ok(None) => return Ok(None),
            Err(e) => return Err(LearnerError::Topics(Box::new(e))),
        }
    }
    let ratings = counts[0].1;
    for &(topic, partitions) in &counts[1..] {
        if partitions != ratings {
            return Err(LearnerError::PartitionedUnlike {
                topic: topic.clone(),
                partitions,
                ratings_topic: config.ratings_topic.clone(),
                ratings,
            });
        }
    }
    // Kafka counts partitions in an i32.
    Ok(Some(i32::try_from(ratings).unwrap_or(i32::MAX)))
}
