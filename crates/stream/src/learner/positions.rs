//! Where a learner resumes: the model topic, and each ratings partition.
//!
//! This is the learner's exactly-once rule, kept in one place. A ratings
//! partition's position moves when a rating's states are queued, but a
//! snapshot saves positions only once everything queued is acknowledged
//! (see [`super::snapshot`]), and on start the sources named by the states
//! already on the model topic move them further ([`Positions::replayed`]).
//! So a restarted learner resumes each partition right after the last
//! rating whose state reached the model topic: no published rating is learnt
//! twice, and none that was not published is skipped.

use std::collections::BTreeMap;

use rdkafka::Offset;
use recstream_core::Model;

use crate::model_topic::Source;
use crate::worker::MODEL_TOPIC_POSITION;

/// The next offset to read, per topic (and partition), as a snapshot saves them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Positions(BTreeMap<String, i64>);

/// Name of a ratings partition's position in a snapshot.
fn ratings_position(partition: i32) -> String {
    format!("ratings/{partition}")
}

impl Positions {
    /// The positions saved with `model` (none for a batch model).
    pub(super) fn of(model: &Model) -> Self {
        Positions(
            model
                .meta
                .online
                .as_ref()
                .map(|o| o.positions.clone())
                .unwrap_or_default(),
        )
    }

    /// Where to start replaying the model topic: after what the snapshot
    /// already holds, or from the start without one.
    pub(super) fn model_start(&self) -> Offset {
        self.0
            .get(MODEL_TOPIC_POSITION)
            .map_or(Offset::Beginning, |&o| Offset::Offset(o))
    }

    /// Where to start reading ratings `partition`: right after its last
    /// published rating.
    pub(super) fn ratings_start(&self, partition: i32) -> Offset {
        self.0
            .get(&ratings_position(partition))
            .map_or(Offset::Beginning, |&o| Offset::Offset(o + 1))
    }

    /// A state replayed from the model topic came from the rating at
    /// `source`; a position never moves back.
    pub(super) fn replayed(&mut self, source: Source) {
        let position = self
            .0
            .entry(ratings_position(source.partition))
            .or_insert(source.offset);
        *position = (*position).max(source.offset);
    }

    /// The rating at `source` was learnt and its states queued.
    pub(super) fn learnt(&mut self, source: Source) {
        self.0
            .insert(ratings_position(source.partition), source.offset);
    }

    /// The model topic was replayed up to the learner's marker at `marker`.
    pub(super) fn caught_up(&mut self, marker: i64) {
        self.0.insert(MODEL_TOPIC_POSITION.to_string(), marker + 1);
    }

    /// The positions to save in a snapshot, once every update up to
    /// `last_update` (the highest acknowledged offset on the model topic)
    /// is acknowledged: a restart from it replays only what came after.
    pub(super) fn to_save(&self, last_update: Option<i64>) -> BTreeMap<String, i64> {
        let mut positions = self.0.clone();
        if let Some(offset) = last_update {
            let next = positions
                .entry(MODEL_TOPIC_POSITION.to_string())
                .or_insert(offset + 1);
            *next = (*next).max(offset + 1);
        }
        positions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(partition: i32, offset: i64) -> Source {
        Source { partition, offset }
    }

    #[test]
    fn without_a_snapshot_everything_is_read_from_the_start() {
        let positions = Positions::default();
        assert_eq!(positions.model_start(), Offset::Beginning);
        assert_eq!(positions.ratings_start(3), Offset::Beginning);
    }

    #[test]
    fn a_partition_resumes_after_its_last_published_rating_however_the_states_were_replayed() {
        let mut positions = Positions::default();
        positions.replayed(source(0, 41));
        positions.replayed(source(0, 7));
        positions.replayed(source(1, 3));
        assert_eq!(positions.ratings_start(0), Offset::Offset(42));
        assert_eq!(positions.ratings_start(1), Offset::Offset(4));
        positions.learnt(source(1, 9));
        assert_eq!(positions.ratings_start(1), Offset::Offset(10));
    }

    #[test]
    fn the_saved_model_position_is_past_the_marker_and_every_acknowledged_update() {
        let mut positions = Positions::default();
        positions.caught_up(100);
        assert_eq!(positions.model_start(), Offset::Offset(101));
        assert_eq!(positions.to_save(None)[MODEL_TOPIC_POSITION], 101);
        assert_eq!(positions.to_save(Some(50))[MODEL_TOPIC_POSITION], 101);
        assert_eq!(positions.to_save(Some(150))[MODEL_TOPIC_POSITION], 151);
        // Saving does not move the live positions.
        assert_eq!(positions.model_start(), Offset::Offset(101));
    }
}
