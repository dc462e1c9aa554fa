//! Which input offsets may be committed: the at-least-once guarantee in one place.
//!
//! A reply is produced asynchronously and acknowledged by the broker some
//! time later, and acknowledgements can arrive out of order. The input offset
//! of a message may only be committed once *it and every earlier message of
//! its partition* have had their output acknowledged; otherwise a crash would
//! skip a request that never got its reply. [`OffsetTracker`] records, per
//! partition, the offsets whose output is in flight, and answers with the
//! highest offset that is safe to commit: the lowest one still in flight, or
//! one past the highest seen when nothing is.
//!
//! Partitions move between workers on a rebalance. Each assignment starts a
//! new *generation* for the partition; acknowledgements for messages of an
//! older generation are ignored, so a stale view never advances the commit.

use std::collections::{BTreeSet, HashMap};

/// A token for one in-flight message, given back when its output is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
    generation: u64,
}

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    in_flight: BTreeSet<i64>,
    highest_seen: Option<i64>,
    last_reported: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        match self.in_flight.first() {
            Some(&lowest) => self.highest_seen.map(|_| lowest),
            None => self.highest_seen.map(|h| h + 1),
        }
    }
}

/// In-flight offsets per partition of one input topic.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionState>,
}

impl OffsetTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a new generation for a freshly assigned partition, forgetting
    /// whatever was known about it before.
    pub fn assign(&mut self, partition: i32) {
        let state = self.partitions.entry(partition).or_default();
        *state = PartitionState {
            generation: state.generation + 1,
            ..PartitionState::default()
        };
    }

    /// Forgets a revoked partition; its outstanding tickets are ignored from now on.
    pub fn revoke(&mut self, partition: i32) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            *state = PartitionState {
                generation: state.generation + 1,
                ..PartitionState::default()
            };
        }
    }

    /// Records that the output for `offset` has been sent.
    pub fn start(&mut self, partition: i32, offset: i64) -> Ticket {
        let state = self.partitions.entry(partition).or_default();
        state.in_flight.insert(offset);
        state.highest_seen = Some(state.highest_seen.map_or(offset, |h| h.max(offset)));
        Ticket {
            partition,
            offset,
            generation: state.generation,
        }
    }

    /// Records that the output for a ticket has been acknowledged.
    pub fn finish(&mut self, ticket: Ticket) {
        if let Some(state) = self.partitions.get_mut(&ticket.partition)
            && state.generation == ticket.generation
        {
            state.in_flight.remove(&ticket.offset);
        }
    }

    /// Number of messages whose output is not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.in_flight.len()).sum()
    }

    /// Offsets (next offset to consume) that became committable since the
    /// last call, per partition.
    pub fn take_committable(&mut self) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for (&partition, state) in &mut self.partitions {
            if let Some(offset) = state.committable()
                && state.last_reported.is_none_or(|last| offset > last)
            {
                state.last_reported = Some(offset);
                out.push((partition, offset));
            }
        }
        out.sort_unstable();
        out
    }

    /// The committable offset of every partition, whether reported before or not.
    pub fn committable(&self) -> Vec<(i32, i64)> {
        let mut out: Vec<(i32, i64)> = self
            .partitions
            .iter()
            .filter_map(|(&p, s)| s.committable().map(|o| (p, o)))
            .collect();
        out.sort_unstable();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commits_only_up_to_the_lowest_unacknowledged_offset() {
        let mut t = OffsetTracker::new();
        t.assign(0);
        let a = t.start(0, 10);
        let b = t.start(0, 11);
        let c = t.start(0, 12);
        t.finish(c);
        assert_eq!(t.take_committable(), vec![(0, 10)]);
        t.finish(b);
        assert_eq!(t.take_committable(), vec![], "10 is still in flight");
        t.finish(a);
        assert_eq!(t.take_committable(), vec![(0, 13)]);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.committable(), vec![(0, 13)]);
    }

    #[test]
    fn partitions_are_independent() {
        let mut t = OffsetTracker::new();
        let a = t.start(0, 5);
        let b = t.start(1, 7);
        t.finish(b);
        assert_eq!(t.take_committable(), vec![(0, 5), (1, 8)]);
        t.finish(a);
        assert_eq!(t.take_committable(), vec![(0, 6)]);
    }

    #[test]
    fn tickets_from_before_a_reassignment_are_ignored() {
        let mut t = OffsetTracker::new();
        t.assign(3);
        let old = t.start(3, 100);
        t.revoke(3);
        t.assign(3);
        // The new owner's view restarts from the committed offset, 90.
        let fresh = t.start(3, 90);
        t.finish(old);
        assert_eq!(
            t.take_committable(),
            vec![(3, 90)],
            "the old ack must not move anything"
        );
        t.finish(fresh);
        assert_eq!(t.take_committable(), vec![(3, 91)]);
    }

    proptest! {
        /// Whatever the order of acknowledgements, the committed offset never
        /// passes an unacknowledged message and ends one past the last.
        #[test]
        fn never_commits_past_an_unacknowledged_offset(order in Just((0..40i64).collect::<Vec<_>>()).prop_shuffle()) {
            let mut t = OffsetTracker::new();
            let tickets: Vec<Ticket> = (0..40).map(|o| t.start(0, o)).collect();
            let mut acked = [false; 40];
            for o in order {
                t.finish(tickets[o as usize]);
                acked[o as usize] = true;
                for (_, committed) in t.take_committable() {
                    prop_assert!(acked[..committed as usize].iter().all(|&a| a));
                }
            }
            prop_assert_eq!(t.committable(), vec![(0, 40)]);
        }
    }
}
