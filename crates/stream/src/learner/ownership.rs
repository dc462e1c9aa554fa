//! Ratings partitions given to this learner and taken away by its group.
//!
//! A partition taken away is simply no longer learnt or merged: everything
//! written for it was flushed inside the rebalance (see `context`), and the
//! deltas not handed over yet are dropped, since the next owner hands them
//! over from the published states. A partition given is restored before
//! any of its ratings is read: the learner writes a marker to the model
//! topic's partition of the same number and reads up to it, so that its
//! log (see `partitions`) and the states it applied include everything the
//! previous owner published. It then hands over the deltas of the tail,
//! takes the deltas partition from after the last merge, and seeks the
//! ratings partition to right after the last published rating.
//!
//! A new batch model changes where a partition stands at one place in its
//! log, the model's announcement: an owned partition waits, paused, until
//! it has read it (see `await_announcement`), then learns again on the new
//! model, from right after the ratings that model holds if it was
//! retrained (`recstream retrain` says which in the announcement).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use super::partitions::PartitionLog;
use super::{Learner, LearnerError, Owned};
use crate::kafka;
use crate::model_topic::ModelMessage;
use crate::rebalance::RebalanceNotice;

/// How long a seek may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

impl Learner {
    /// Handles the group's changes queued since the last poll.
    pub(super) async fn on_notices(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), LearnerError> {
        for notice in self.ratings.context().take_notices() {
            match notice {
                RebalanceNotice::Revoked(partitions) => self.give_up(&partitions)?,
                RebalanceNotice::Assigned(partitions) => {
                    self.take_over(&partitions, shutdown).await?
                }
            }
        }
        Ok(())
    }

    /// Stops learning and merging `partitions`.
    fn give_up(&mut self, partitions: &[i32]) -> Result<(), LearnerError> {
        let mut taken = TopicPartitionList::new();
        for &p in partitions {
            if let Some(owned) = self.owned.remove(&p) {
                // Its own states were not read back while it owned the
                // partition: its log takes what the learner knows.
                let log = self.logs.entry(p).or_default();
                *log = owned.log(log);
                self.pending.forget(p);
                taken.add_partition(&self.config.deltas_topic, p);
            }
        }
        if self.config.update_items && taken.count() > 0 {
            self.deltas.incremental_unassign(&taken)?;
        }
        self.owned_gauge();
        Ok(())
    }

    /// Restores `partitions` and resumes their ratings and deltas.
    async fn take_over(
        &mut self,
        partitions: &[i32],
        shutdown: &CancellationToken,
    ) -> Result<(), LearnerError> {
        let mut markers = BTreeMap::new();
        for &p in partitions {
            markers.insert(p, self.marker(p).await?);
        }
        if !self.read_past(&markers, shutdown).await? {
            return Ok(());
        }
        let mut deltas = TopicPartitionList::new();
        let mut resumes = Vec::with_capacity(partitions.len());
        for &p in partitions {
            let log = self.logs.get(&p).cloned().unwrap_or_default();
            self.owned.insert(
                p,
                Owned {
                    seq: log.seq,
                    last_source: log.last_source,
                    item_seq: log.item_seq,
                    merged: log.merged,
                    merge_checkpointed: log.merged,
                    stored: None,
                    forwarded: log.forwarded,
                    tail: log.tail.clone(),
                    awaiting: None,
                },
            );
            self.hand_over_tail(p, &log).await?;
            deltas.add_partition_offset(&self.config.deltas_topic, p, after(log.merged))?;
            if self.announced_elsewhere(&log) {
                // The model learnt on is announced, but not here yet.
                self.await_announcement(p).await?;
            } else {
                resumes.push((p, after(log.last_source)));
            }
            tracing::info!(
                partition = p,
                learnt = log.seq,
                resume_at = ?after(log.last_source),
                handed_over = log.tail.len(),
                "ratings partition restored"
            );
        }
        if self.config.update_items {
            self.deltas.incremental_assign(&deltas)?;
        }
        self.resume_ratings(resumes).await?;
        self.owned_gauge();
        Ok(())
    }

    /// Whether the batch model learnt on was announced, but not (yet) on
    /// the partition `log` is of.
    fn announced_elsewhere(&self, log: &PartitionLog) -> bool {
        self.announced
            .as_ref()
            .is_some_and(|a| log.base.as_deref() != Some(a.id.as_str()))
    }

    /// Makes owned partition `p` learn on the batch model just switched to
    /// only from that model's announcement on `p` on, where its log starts
    /// over: a state for the new model written before the announcement
    /// would be counted twice by a learner that takes `p` over (it reads
    /// past the state, then starts over at the announcement). If the
    /// announcement is in `p`'s log already, `p` restarts now; otherwise `p`
    /// is paused and the announcement copied to it, so that it arrives
    /// whatever became of its publisher (a copy read after the original
    /// changes nothing).
    pub(super) async fn await_announcement(&mut self, p: i32) -> Result<(), LearnerError> {
        let Some(announcement) = self.announced.clone() else {
            return Ok(());
        };
        let Some(owned) = self.owned.get_mut(&p) else {
            return Ok(());
        };
        owned.awaiting = Some(announcement.clone());
        let log = self.logs.get(&p).cloned().unwrap_or_default();
        if !self.announced_elsewhere(&log) {
            return self.restart(p).await;
        }
        let mut paused = TopicPartitionList::new();
        paused.add_partition(&self.config.ratings_topic, p);
        self.ratings.pause(&paused)?;
        tracing::info!(
            partition = p,
            model = %announcement.id,
            "ratings partition paused until the new model's announcement is read on it"
        );
        self.publisher
            .update(p, &ModelMessage::Model(announcement))
            .await
    }

    /// Owned partition `p`, paused for a batch model's announcement that is
    /// now in its log, learns again: after the ratings the model holds for
    /// a retrained model (read again from there and learnt on top of it),
    /// where it stopped otherwise.
    pub(super) async fn restart(&mut self, p: i32) -> Result<(), LearnerError> {
        let log = self.logs.get(&p).cloned().unwrap_or_default();
        let topic = self.config.ratings_topic.clone();
        let Some(owned) = self.owned.get_mut(&p) else {
            return Ok(());
        };
        let Some(announcement) = owned.awaiting.take() else {
            return Ok(());
        };
        let retrained = announcement.resumes_at(&topic, p).is_some();
        if retrained {
            owned.last_source = log.last_source;
            owned.forwarded = log.forwarded;
            owned.tail.clear();
            owned.stored = None;
        }
        let resume_at = after(owned.last_source);
        tracing::info!(
            partition = p,
            model = %announcement.id,
            retrained,
            ?resume_at,
            "ratings partition learning on the new model"
        );
        self.resume_ratings(vec![(p, resume_at)]).await
    }

    /// Seeks each restored ratings partition to where it resumes, and
    /// un-pauses it.
    async fn resume_ratings(&mut self, resumes: Vec<(i32, Offset)>) -> Result<(), LearnerError> {
        let consumer = Arc::clone(&self.ratings);
        let topic = self.config.ratings_topic.clone();
        kafka::blocking("resuming the restored ratings partitions", move || {
            let mut partitions = TopicPartitionList::new();
            for (p, offset) in resumes {
                consumer.seek(&topic, p, offset, SEEK_TIMEOUT)?;
                partitions.add_partition(&topic, p);
            }
            consumer.resume(&partitions)
        })
        .await??;
        Ok(())
    }

    fn owned_gauge(&self) {
        metrics::gauge!(crate::metrics::LEARNER_PARTITIONS).set(self.owned.len() as f64);
    }
}

/// The position right after `offset` (`None`: the beginning).
fn after(offset: Option<i64>) -> Offset {
    offset.map_or(Offset::Beginning, |o| Offset::Offset(o + 1))
}
