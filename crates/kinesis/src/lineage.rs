//! Which shards of a stream to read now: parents before children.
//!
//! Kinesis splits and merges shards by closing them and opening children
//! (two for a split, one with two parents for a merge). A key's records
//! move to the child, so reading a child before its parents are done would
//! answer a user's later requests before earlier ones. A shard is readable
//! when every parent is recorded as ended in the checkpoint or is no longer
//! listed (expired with the stream's retention). On a first start with
//! `latest`, closed shards are skipped (nothing more will arrive on them)
//! and open ones start at their tip, whatever their parents.

use std::collections::BTreeSet;

use crate::checkpoint::{Checkpoint, ShardPosition};

/// A shard as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Its id.
    pub id: String,
    /// The shard it was split from, or one of the two it was merged from.
    pub parent: Option<String>,
    /// The other shard it was merged from.
    pub adjacent_parent: Option<String>,
    /// Whether it is closed (it has an ending sequence number).
    pub closed: bool,
}

impl Shard {
    fn parents(&self) -> impl Iterator<Item = &String> {
        self.parent.iter().chain(self.adjacent_parent.iter())
    }
}

/// Where a shard with no checkpoint starts, on a worker's first start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FirstStart {
    /// The oldest record the stream keeps.
    #[default]
    TrimHorizon,
    /// Only records written from now on.
    Latest,
}

/// Where a shard's reading starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Right after this sequence number.
    After(String),
    /// At the oldest record kept.
    TrimHorizon,
    /// At the tip.
    Latest,
}

/// The shards to start reading now, and where: every shard not ended and
/// not being read whose parents are done. `first` applies when the worker
/// has no checkpoint at all; a shard that appears later (a child, or a shard
/// this worker never saw) starts at its beginning.
pub fn readable(
    listed: &[Shard],
    checkpoint: &Checkpoint,
    reading: &BTreeSet<String>,
    first: Option<FirstStart>,
) -> Vec<(String, StartAt)> {
    let ids: BTreeSet<&String> = listed.iter().map(|s| &s.id).collect();
    let mut out = Vec::new();
    for shard in listed {
        if reading.contains(&shard.id) || checkpoint.ended(&shard.id) {
            continue;
        }
        if let Some(ShardPosition::After(sequence)) = checkpoint.shards.get(&shard.id) {
            out.push((shard.id.clone(), StartAt::After(sequence.clone())));
            continue;
        }
        if first == Some(FirstStart::Latest) {
            if !shard.closed {
                out.push((shard.id.clone(), StartAt::Latest));
            }
            continue;
        }
        let parents_done = shard
            .parents()
            .all(|p| !ids.contains(p) || checkpoint.ended(p));
        if parents_done {
            out.push((shard.id.clone(), StartAt::TrimHorizon));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parent: Option<&str>, adjacent: Option<&str>, closed: bool) -> Shard {
        Shard {
            id: id.into(),
            parent: parent.map(Into::into),
            adjacent_parent: adjacent.map(Into::into),
            closed,
        }
    }

    /// 0 split into 1 and 2, then 1 and 2 merged into 3; 9 expired parent.
    fn stream() -> Vec<Shard> {
        vec![
            shard("0", Some("9"), None, true),
            shard("1", Some("0"), None, true),
            shard("2", Some("0"), None, true),
            shard("3", Some("1"), Some("2"), false),
        ]
    }

    fn ids(out: &[(String, StartAt)]) -> Vec<&str> {
        out.iter().map(|(id, _)| id.as_str()).collect()
    }

    #[test]
    fn children_wait_until_every_parent_has_ended() {
        let mut checkpoint = Checkpoint::new("s");
        let none = BTreeSet::new();
        let first = Some(FirstStart::TrimHorizon);
        assert_eq!(ids(&readable(&stream(), &checkpoint, &none, first)), ["0"]);
        checkpoint.shards.insert("0".into(), ShardPosition::End);
        assert_eq!(
            ids(&readable(&stream(), &checkpoint, &none, None)),
            ["1", "2"]
        );
        checkpoint.shards.insert("1".into(), ShardPosition::End);
        assert_eq!(ids(&readable(&stream(), &checkpoint, &none, None)), ["2"]);
        checkpoint.shards.insert("2".into(), ShardPosition::End);
        let out = readable(&stream(), &checkpoint, &none, None);
        assert_eq!(out, [("3".to_string(), StartAt::TrimHorizon)]);
    }

    #[test]
    fn a_checkpointed_shard_resumes_after_its_sequence_and_one_being_read_is_left_alone() {
        let mut checkpoint = Checkpoint::new("s");
        checkpoint
            .shards
            .insert("0".into(), ShardPosition::After("42".into()));
        let out = readable(&stream(), &checkpoint, &BTreeSet::new(), None);
        assert_eq!(out, [("0".to_string(), StartAt::After("42".into()))]);
        let reading = BTreeSet::from(["0".to_string()]);
        assert!(readable(&stream(), &checkpoint, &reading, None).is_empty());
    }

    #[test]
    fn a_first_start_at_the_tip_reads_only_open_shards() {
        let out = readable(
            &stream(),
            &Checkpoint::new("s"),
            &BTreeSet::new(),
            Some(FirstStart::Latest),
        );
        assert_eq!(out, [("3".to_string(), StartAt::Latest)]);
    }
}
