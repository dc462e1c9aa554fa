//! What each partition of the model topic says about where its learner got
//! to: the learner's exactly-once rule, kept in one place.
//!
//! A learner reads every partition of the model topic all the time, and for
//! each keeps a [`PartitionLog`]: the last rating whose user state is on the
//! partition (the partition's ratings resume right after it, so a published
//! rating is never learnt twice and an unpublished one never skipped), the
//! number of ratings learnt (the sequence), how far the item deltas of those
//! ratings were handed over (`forwarded`) and merged (`merged`), and the
//! deltas of the ratings published since the last hand-over (`tail`). A
//! learner that takes a partition over hands the tail over again: the
//! previous owner may have died before it did, and a merge counts a batch
//! it already holds only once.
//!
//! A batch model's announcement on the partition is where the log starts
//! over for that model: states and checkpoints of the previous one read
//! after it were in flight and are passed over, and for a retrained model
//! the partition resumes right after the last rating the model holds.
//!
//! A snapshot saves these logs ([`ResumeState`]), so a restarted learner
//! reads the topic only from where they end.

use std::collections::BTreeMap;

use recstream_core::online::{ItemDelta, MergedItem};
use serde::{Deserialize, Serialize};

use crate::model_topic::ModelMessage;
use crate::worker::MODEL_TOPIC_POSITION;

/// A rating's item delta published with its user state, not yet handed over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct TailDelta {
    /// The batch model it applies to.
    pub base: String,
    /// The delta.
    pub delta: ItemDelta,
}

/// What one partition of the model topic says, as read so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct PartitionLog {
    /// The next offset to read (`None`: the beginning).
    pub next: Option<i64>,
    /// Offset of the last rating of this ratings partition whose user state
    /// is on the partition.
    pub last_source: Option<i64>,
    /// Ratings learnt on this partition.
    pub seq: u64,
    /// Item states published on this partition.
    pub item_seq: u64,
    /// Last rating whose item delta was handed over.
    pub forwarded: Option<i64>,
    /// Last offset of the deltas partition merged into the item states.
    pub merged: Option<i64>,
    /// Deltas of the ratings published after `forwarded`, by rating offset.
    pub tail: BTreeMap<i64, TailDelta>,
    /// The batch model last announced on the partition (`None`: none read).
    /// States and checkpoints for any other are passed over: they were in
    /// flight when the announcement was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

impl PartitionLog {
    /// Passes the message at `offset` by (unreadable, or not ours to read).
    pub(super) fn skip(&mut self, offset: i64) {
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Takes in the message at `offset` (an announcement: see [`Self::announced`]).
    pub(super) fn read(&mut self, offset: i64, message: &ModelMessage) {
        self.skip(offset);
        let stale = match message {
            ModelMessage::User { base, .. }
            | ModelMessage::Item { base, .. }
            | ModelMessage::Forwarded { base, .. }
            | ModelMessage::Merged { base, .. } => self.base.as_ref().is_some_and(|b| b != base),
            ModelMessage::Model(_) | ModelMessage::Marker { .. } => false,
        };
        if stale {
            return;
        }
        match message {
            ModelMessage::User {
                seq,
                base,
                source,
                item_delta,
                ..
            } => {
                self.seq = self.seq.max(*seq);
                if let Some(source) = source {
                    self.last_source = max(self.last_source, source.offset);
                    let handed_over = self.forwarded.is_some_and(|f| source.offset <= f);
                    if let (Some(delta), false) = (item_delta, handed_over) {
                        let tail = TailDelta {
                            base: base.clone(),
                            delta: delta.clone(),
                        };
                        self.tail.insert(source.offset, tail);
                    }
                }
            }
            ModelMessage::Item { seq, .. } => self.item_seq = self.item_seq.max(*seq),
            ModelMessage::Forwarded { through, .. } => self.forwarded(*through),
            ModelMessage::Merged { offset, .. } => self.merged = max(self.merged, *offset),
            ModelMessage::Model(_) | ModelMessage::Marker { .. } => {}
        }
    }

    /// The batch model `id` is announced here. A retrained model holds the
    /// partition's ratings before `resumes_at`: the partition starts over
    /// from there, on top of it. Returns whether this is news (an
    /// announcement read again, or its copy, changes nothing).
    pub(super) fn announced(&mut self, id: &str, resumes_at: Option<i64>) -> bool {
        if self.base.as_deref() == Some(id) {
            return false;
        }
        self.base = Some(id.to_string());
        if let Some(next) = resumes_at {
            let last = (next > 0).then(|| next - 1);
            self.last_source = last;
            self.forwarded = last;
            self.tail.clear();
        }
        true
    }

    /// The deltas up to `through` were handed over.
    pub(super) fn forwarded(&mut self, through: i64) {
        self.forwarded = max(self.forwarded, through);
        self.tail = self.tail.split_off(&(through + 1));
    }
}

fn max(current: Option<i64>, seen: i64) -> Option<i64> {
    Some(current.map_or(seen, |c| c.max(seen)))
}

/// What a learner's snapshot saves besides the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ResumeState {
    /// Per partition of the model topic.
    pub partitions: BTreeMap<i32, PartitionLog>,
    /// The merged item states known (a learner merges the items of the
    /// partitions it owns on top of them).
    pub items: Vec<MergedItem>,
}

impl ResumeState {
    /// The positions a worker started from the snapshot resumes from.
    pub(super) fn worker_positions(&self) -> BTreeMap<String, i64> {
        self.partitions
            .iter()
            .filter_map(|(p, log)| Some((model_position(*p), log.next?)))
            .collect()
    }
}

/// Name of a model topic partition's position in a snapshot.
pub fn model_position(partition: i32) -> String {
    format!("{MODEL_TOPIC_POSITION}/{partition}")
}

#[cfg(test)]
mod tests {
    use recstream_core::RawId;
    use recstream_core::online::EntityState;

    use super::*;
    use crate::model_topic::Source;

    fn user(seq: u64, offset: i64, item: &str) -> ModelMessage {
        user_on("b", seq, offset, item)
    }

    fn user_on(base: &str, seq: u64, offset: i64, item: &str) -> ModelMessage {
        ModelMessage::User {
            seq,
            base: base.into(),
            state: EntityState {
                id: RawId::new("u"),
                bias: 0.0,
                factors: vec![],
                count: 1,
            },
            rated: vec![],
            source: Some(Source {
                partition: 0,
                offset,
            }),
            rating_ts_ms: None,
            item_delta: Some(ItemDelta {
                id: RawId::new(item),
                bias: 0.1,
                factors: vec![],
                count: 1,
            }),
        }
    }

    #[test]
    fn a_partition_resumes_after_its_last_published_rating_in_whatever_order_it_is_read() {
        let mut log = PartitionLog::default();
        log.read(5, &user(2, 41, "a"));
        log.read(3, &user(1, 7, "a"));
        assert_eq!((log.last_source, log.seq, log.next), (Some(41), 2, Some(6)));
    }

    #[test]
    fn the_tail_holds_exactly_the_deltas_not_handed_over() {
        let mut log = PartitionLog::default();
        log.read(0, &user(1, 10, "a"));
        log.read(1, &user(2, 11, "b"));
        log.read(
            2,
            &ModelMessage::Forwarded {
                base: "b".into(),
                partition: 0,
                through: 10,
            },
        );
        log.read(3, &user(3, 12, "c"));
        assert_eq!(log.tail.keys().copied().collect::<Vec<_>>(), vec![11, 12]);
        // A state read again (a replay from an older position) after the
        // hand-over that covers it does not come back.
        log.read(0, &user(1, 10, "a"));
        assert_eq!(log.tail.len(), 2);
        log.forwarded(12);
        assert!(log.tail.is_empty());
        assert_eq!(log.forwarded, Some(12));
    }

    #[test]
    fn a_retrained_model_restarts_the_partition_where_its_ratings_end() {
        let mut log = PartitionLog::default();
        log.read(0, &user(1, 10, "a"));
        log.read(1, &user(2, 11, "b"));
        assert!(log.announced("b2", Some(11)));
        // The model holds ratings up to 10: rating 11 is learnt again on it.
        assert_eq!((log.last_source, log.forwarded), (Some(10), Some(10)));
        assert!(log.tail.is_empty());
        // A state of the old model still in flight is passed over.
        log.read(3, &user(3, 12, "c"));
        assert_eq!(log.last_source, Some(10));
        log.read(
            4,
            &ModelMessage::Forwarded {
                base: "b".into(),
                partition: 0,
                through: 12,
            },
        );
        assert_eq!(log.forwarded, Some(10));
        // The new model's states move it on; the sequence keeps counting.
        log.read(5, &user_on("b2", 4, 11, "b"));
        assert_eq!((log.last_source, log.seq, log.next), (Some(11), 4, Some(6)));
        assert_eq!(log.tail.keys().copied().collect::<Vec<_>>(), vec![11]);
        // The same announcement again (a learner's copy) changes nothing.
        assert!(!log.announced("b2", Some(11)));
        assert_eq!(log.last_source, Some(11));
    }

    #[test]
    fn a_retrain_that_holds_nothing_of_a_partition_restarts_it_from_the_beginning() {
        let mut log = PartitionLog::default();
        log.read(0, &user(1, 10, "a"));
        assert!(log.announced("b2", Some(0)));
        assert_eq!((log.last_source, log.forwarded), (None, None));
    }

    #[test]
    fn a_model_published_by_hand_keeps_the_partitions_position() {
        let mut log = PartitionLog::default();
        log.read(0, &user(1, 10, "a"));
        assert!(log.announced("b2", None));
        assert_eq!(log.last_source, Some(10));
    }

    #[test]
    fn the_resume_state_reads_back_from_a_snapshots_json() {
        let mut log = PartitionLog::default();
        log.read(4, &user(1, 10, "a"));
        log.announced("b", Some(3));
        let state = ResumeState {
            partitions: BTreeMap::from([(2, log)]),
            items: vec![MergedItem {
                state: EntityState {
                    id: RawId::new("a"),
                    bias: 0.5,
                    factors: vec![0.25],
                    count: 3,
                },
                through: BTreeMap::from([(2, 10), (5, 1)]),
            }],
        };
        let text = serde_json::to_string(&serde_json::to_value(&state).unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(serde_json::from_value::<ResumeState>(value).unwrap(), state);
    }

    #[test]
    fn a_snapshot_tells_workers_where_each_partition_resumes() {
        let mut state = ResumeState::default();
        state.partitions.insert(0, PartitionLog::default());
        state.partitions.insert(
            3,
            PartitionLog {
                next: Some(17),
                ..PartitionLog::default()
            },
        );
        assert_eq!(
            state.worker_positions(),
            BTreeMap::from([("model-topic/3".to_string(), 17)])
        );
    }
}
