//! The learner: ratings in, model updates out; one of a group of processes
//! that learn one model together.
//!
//! Learners join a consumer group on the ratings topic, which is keyed by
//! user, so each ratings partition, and with it each user, has one learner
//! at a time. That learner folds each valid rating into its copy of the
//! model with the core's [`OnlineLearner`] and publishes the user's new
//! state to the same partition of the model topic, which is partitioned
//! like the ratings topic and followed by every worker. Invalid ratings go
//! to a dead-letter topic with the reason.
//!
//! Items are shared. Each learner changes its own copy of an item at once,
//! adds the change up per ratings partition, and every `--item-sync-ms`
//! hands the sums over on the item-deltas topic, to the partition of each
//! item. The learner that owns that partition (by the same group) merges
//! every learner's deltas, each batch counted once, and publishes the
//! item's state on its partition of the model topic.
//!
//! Restart safety comes from the model topic itself being the record of
//! what was learnt (see `partitions`). Every user state names the rating it
//! came from and carries that rating's item delta. A learner reads every
//! partition of the model topic all the time; when the group gives it a
//! partition, it reads that partition to a marker it writes, hands over the
//! deltas of the ratings published since the last hand-over (the previous
//! owner may not have), and resumes the ratings right after the last one
//! published. A rating consumed but not published before a crash or a
//! rebalance is learnt again; one that was published is never applied
//! twice. Snapshots (written after all outstanding messages are
//! acknowledged) only shorten the reading at start.
//!
//! A new batch model, announced on every partition of the model topic,
//! replaces the one learnt on; each owned partition learns on it from its
//! announcement in that partition on (paused until then). A retrained
//! model's announcement says up to which rating of each partition it holds
//! (`recstream retrain`): the partition's log starts over there, and its
//! later ratings are read again and learnt on top of the new model.
//!
//! Delivery failures are never dropped: a message that librdkafka could not
//! deliver after its own retries (`message.timeout.ms`), or one that can
//! never be delivered (no such topic, no permission, too large), stops the
//! learner with an error that names the topic and the cause. Sending it
//! again later, out of order, could overwrite a newer state; a restart
//! resumes from the snapshot and the published states as above, so the
//! supervisor's restart is the retry. A dead letter that is too large for
//! its topic is cut down and sent again instead.
//!
//! The code is shaped like mini-redis's `Handler`: a `Learner` holds the
//! state, [`run`] walks it through its phases in order, and the learning
//! phase is a short `select!` over shutdown and the next event, each event
//! handled by a method. One file a job:
//!
//! - `config`: [`LearnerConfig`], checked before anything starts;
//! - `start`: the clients, the topics checked, and the catch-up with the model topic;
//! - `follow`: the model topic read: other learners' states applied, logs kept;
//! - `ownership`: partitions given (restored, resumed) and taken away;
//! - `ratings`: each rating learnt or refused;
//! - `items`: item deltas handed over, merged, and their checkpoints;
//! - `publish`: everything sent, and the acknowledgements settled;
//! - `partitions`: what each partition says, the exactly-once rule;
//! - `context`: the rebalance hooks of the ratings consumer;
//! - `snapshot`: the model and its logs written down, once acknowledged;
//! - `error`: why the learner stops.

mod config;
mod context;
mod error;
mod follow;
mod items;
mod ownership;
mod partitions;
mod publish;
mod ratings;
mod snapshot;
mod start;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::StreamConsumer;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::BorrowedMessage;
use recstream_core::Model;
use recstream_core::online::{
    ItemBase, ItemLedger, OnlineLearner, PendingDeltas, PrequentialStats,
};
use tokio_util::sync::CancellationToken;

use crate::config::Checked;
use crate::model_topic::ModelAnnouncement;

pub use config::LearnerConfig;
pub use error::LearnerError;
pub use partitions::model_position;
pub use snapshot::latest_snapshot;

use crate::kafka::LoggingContext;
use crate::metrics::{self as m, Health};
use context::LearnerContext;
use items::Checkpoint;
use partitions::PartitionLog;
use publish::Publisher;

/// What a learner did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LearnerSummary {
    /// Ratings learnt in this run.
    pub learnt: u64,
    /// Ratings refused (dead-lettered).
    pub dead_letters: u64,
    /// Dead letters that could not be delivered even cut down (logged).
    pub undeliverable: u64,
    /// States replayed from the model topic at start.
    pub replayed: u64,
    /// Ratings learnt on every partition, by every learner, as far as this
    /// one has read.
    pub seq: u64,
    /// Prequential RMSE over this run's ratings.
    pub rmse: f64,
    /// Prequential hit rate at 10 over this run's ratings.
    pub hit_rate_at_10: f64,
}

/// Runs the learner until `shutdown`, starting from the latest snapshot if
/// there is one, `initial` otherwise.
pub async fn run(
    config: Checked<LearnerConfig>,
    initial: Model,
    shutdown: CancellationToken,
) -> Result<LearnerSummary, LearnerError> {
    crate::metrics::recorder();
    let config = config.into_inner();
    let Some(partitions) = start::check_partitions(&config, &shutdown).await? else {
        return Ok(LearnerSummary::default());
    };
    let mut learner = Learner::new(config, initial, partitions)?;
    if !learner.catch_up(&shutdown).await? {
        // Stopped while catching up: nothing learnt, nothing to save.
        return Ok(learner.summary);
    }
    let _ready = learner.join()?;
    learner.run(&shutdown).await?;
    learner.finish().await
}

/// How often the prequential accuracy is reported.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// A ratings partition this learner owns and has restored.
#[derive(Debug, Clone, Default)]
struct Owned {
    /// Ratings learnt on it.
    seq: u64,
    /// The last rating learnt and published.
    last_source: Option<i64>,
    /// Item states published on it.
    item_seq: u64,
    /// The last batch of the deltas partition merged.
    merged: Option<i64>,
    /// The merge position last put in a checkpoint.
    merge_checkpointed: Option<i64>,
    /// The rating position last stored for the group's committed offsets.
    stored: Option<i64>,
    /// The last hand-over checkpoint written.
    forwarded: Option<i64>,
    /// Deltas of the ratings published since that checkpoint, by offset:
    /// what the partition's log would say, since the learner does not read
    /// back its own states (see `follow`).
    tail: BTreeMap<i64, partitions::TailDelta>,
    /// The batch model whose announcement the partition waits for before
    /// it learns again (paused meanwhile; see `ownership`).
    awaiting: Option<ModelAnnouncement>,
}

impl Owned {
    /// The partition's log as this learner, its one writer, knows it:
    /// `read` (what was read back from the topic) brought up to date.
    fn log(&self, read: &PartitionLog) -> PartitionLog {
        let mut log = read.clone();
        log.seq = log.seq.max(self.seq);
        log.item_seq = log.item_seq.max(self.item_seq);
        log.last_source = log.last_source.max(self.last_source);
        log.merged = log.merged.max(self.merged);
        log.tail.extend(self.tail.clone());
        if let Some(through) = self.forwarded.max(read.forwarded) {
            log.forwarded(through);
        }
        log
    }
}

/// A learner between its start and its stop.
struct Learner {
    config: LearnerConfig,
    /// Partitions of the ratings, model and deltas topics (the same).
    partitions: i32,
    /// The model being learnt, on top of its batch model: this learner's
    /// users, everyone else's as published, items as merged plus this
    /// learner's own changes not merged yet.
    model: OnlineLearner,
    /// The batch model's items, where every merge starts.
    base: ItemBase,
    /// Merged item states: this learner's items as it merges them, the
    /// others' as published.
    ledger: ItemLedger,
    /// This learner's item deltas not merged yet.
    pending: PendingDeltas,
    /// What each model topic partition says, as read so far.
    logs: BTreeMap<i32, PartitionLog>,
    /// The announcement of the batch model learnt on, once read.
    announced: Option<ModelAnnouncement>,
    /// The ratings partitions this learner owns and has restored.
    owned: BTreeMap<i32, Owned>,
    /// Hand-over checkpoints waiting for their messages' acknowledgements.
    checkpoints: VecDeque<Checkpoint>,
    publisher: Publisher,
    /// Every partition of the model topic, read all the time. Shared so that
    /// a loop can borrow messages from it while it changes the rest.
    follower: Arc<StreamConsumer<LoggingContext>>,
    /// The ratings topic, in the learners' group.
    ratings: Arc<StreamConsumer<LearnerContext>>,
    /// The deltas partitions of the owned partitions.
    deltas: Arc<StreamConsumer<LoggingContext>>,
    /// Unique to this start: names the readers' groups and the markers.
    nonce: String,
    stats: PrequentialStats,
    /// Ratings counted in the last accuracy report.
    reported: u64,
    summary: LearnerSummary,
    read_errors: ReadErrors,
}

impl Learner {
    /// Learns until `shutdown`, one event at a time: a delivery settled, a
    /// message on the model topic, a rating, a batch of item deltas, a
    /// hand-over, a snapshot or a report due.
    async fn run(&mut self, shutdown: &CancellationToken) -> Result<(), LearnerError> {
        // Local handles: a message borrows its consumer, and handling it
        // changes `self`.
        let (follower, ratings, deltas) = (
            Arc::clone(&self.follower),
            Arc::clone(&self.ratings),
            Arc::clone(&self.deltas),
        );
        let every = self.config.snapshot_every;
        let mut snapshot_timer =
            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut sync_timer = tokio::time::interval(self.config.item_sync);
        let mut report_timer = tokio::time::interval(REPORT_EVERY);
        loop {
            // Partitions given or taken inside the last poll come first:
            // nothing is learnt or written for a partition no longer ours.
            self.on_notices(shutdown).await?;
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                Some(delivered) = self.publisher.next(), if self.publisher.has_pending() => {
                    self.publisher.settled(delivered).await?;
                    self.write_checkpoints().await?;
                }
                next = follower.recv() => self.on_model_message(next).await?,
                next = ratings.recv() => self.on_rating(next).await?,
                next = deltas.recv() => self.on_deltas(next).await?,
                _ = sync_timer.tick() => self.sync().await?,
                _ = snapshot_timer.tick() => self.snapshot().await?,
                _ = report_timer.tick() => self.on_tick(),
            }
        }
    }

    /// Every partition's log, those owned brought up to date.
    fn current_logs(&self) -> BTreeMap<i32, PartitionLog> {
        let mut logs = self.logs.clone();
        for (p, owned) in &self.owned {
            let log = logs.entry(*p).or_default();
            *log = owned.log(log);
        }
        logs
    }

    /// Ratings learnt on every partition as far as this learner knows.
    fn total_seq(&self) -> u64 {
        self.logs
            .iter()
            .map(|(p, log)| {
                let own = self.owned.get(p).map_or(0, |o| o.seq);
                log.seq.max(own)
            })
            .sum()
    }

    /// Settles what is outstanding, writes the last snapshot, and says
    /// what was done.
    async fn finish(mut self) -> Result<LearnerSummary, LearnerError> {
        self.snapshot().await?;
        let summary = LearnerSummary {
            undeliverable: self.publisher.undeliverable(),
            seq: self.total_seq(),
            rmse: self.stats.rmse(),
            hit_rate_at_10: self.stats.hit_rate(),
            ..self.summary
        };
        tracing::info!(
            learnt = summary.learnt,
            dead_letters = summary.dead_letters,
            seq = summary.seq,
            "learner stopped"
        );
        Ok(summary)
    }
}

/// Readiness for as long as the value lives (not ready again on every way out).
struct Ready(Arc<Health>);

impl Ready {
    fn set(health: &Arc<Health>) -> Self {
        health.set_ready(true);
        Ready(health.clone())
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        self.0.set_ready(false);
    }
}

/// Errors reading a topic, logged at most every few seconds: librdkafka
/// retries by itself, so the loop goes on, and a broker that is away would
/// otherwise flood the log.
#[derive(Debug, Default)]
struct ReadErrors {
    last_logged: Option<Instant>,
}

impl ReadErrors {
    /// The message read from `topic`, or `None` after an error (reported).
    fn message<'a>(
        &mut self,
        topic: &str,
        next: KafkaResult<BorrowedMessage<'a>>,
    ) -> Option<BorrowedMessage<'a>> {
        next.map_err(|e| self.report(topic, &e)).ok()
    }

    fn report(&mut self, topic: &str, error: &KafkaError) {
        metrics::counter!(m::CONSUME_ERRORS, "topic" => topic.to_string()).increment(1);
        if self
            .last_logged
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(5))
        {
            self.last_logged = Some(Instant::now());
            tracing::warn!(
                topic,
                "error reading {topic:?}: {error}; the client retries"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use recstream_core::RawId;
    use recstream_core::online::ItemDelta;

    use super::partitions::TailDelta;
    use super::*;

    fn tail(id: &str) -> TailDelta {
        TailDelta {
            base: "b".into(),
            delta: ItemDelta {
                id: RawId::new(id),
                bias: 0.1,
                factors: vec![],
                count: 1,
            },
        }
    }

    #[test]
    fn an_owned_partitions_log_is_what_its_writer_knows_not_what_it_read_back() {
        let owned = Owned {
            seq: 5,
            last_source: Some(9),
            forwarded: Some(7),
            tail: BTreeMap::from([(7, tail("a")), (9, tail("b"))]),
            ..Owned::default()
        };
        let read = PartitionLog {
            next: Some(10),
            seq: 3,
            last_source: Some(4),
            ..PartitionLog::default()
        };
        let log = owned.log(&read);
        assert_eq!((log.seq, log.last_source, log.next), (5, Some(9), Some(10)));
        assert_eq!(log.forwarded, Some(7));
        assert_eq!(log.tail.keys().copied().collect::<Vec<_>>(), vec![9]);
    }
}
