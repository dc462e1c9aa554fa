//! A learner's item deltas: what its ratings changed in items, batched per
//! source and held until the merged item states include them.
//!
//! Each rating a learner learns changes its item by an [`ItemDelta`]. The
//! learner adds them up per source (the ratings partition the rating came
//! from) and, at its sync interval, hands each source's sum over as one
//! [`DeltaBatch`], named by the source and the last rating it covers. Until
//! the merged state of an item says it includes that batch, the learner
//! keeps the batch's share of the item, so that its own view of the item
//! (merged plus pending, [`PendingDeltas::pending`]) never loses its own
//! recent changes, nor counts them twice once they are merged.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::EntityState;
use crate::ids::RawId;

/// What ratings changed in one item: added to its bias, factors and count.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemDelta {
    /// The item's raw id.
    pub id: RawId,
    /// Added to the bias.
    pub bias: f32,
    /// Added to the factors, one by one.
    pub factors: Vec<f32>,
    /// Ratings it covers.
    pub count: u32,
}

impl ItemDelta {
    /// Adds `other` (for the same item) to this delta.
    pub fn add(&mut self, other: &ItemDelta) {
        self.bias += other.bias;
        add_factors(&mut self.factors, &other.factors);
        self.count += other.count;
    }

    /// Adds this delta to an item's state.
    pub fn add_to(&self, state: &mut EntityState) {
        state.bias += self.bias;
        add_factors(&mut state.factors, &self.factors);
        state.count = state.count.saturating_add(self.count);
    }
}

/// Adds `from` to `into` element by element; a shorter side adds nothing
/// past its end (a delta of another factor count is not ours to apply).
fn add_factors(into: &mut [f32], from: &[f32]) {
    if into.len() == from.len() {
        for (a, b) in into.iter_mut().zip(from) {
            *a += b;
        }
    }
}

/// One source's item deltas since its previous batch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeltaBatch {
    /// The ratings partition the deltas came from.
    pub source: i32,
    /// The offset of the last rating they cover: a merge counts a batch for
    /// an item only if this is past what the item already holds.
    pub through: i64,
    /// One delta per item changed, in no particular order.
    pub deltas: Vec<ItemDelta>,
}

/// A batch handed over, kept until every item in it is merged.
#[derive(Debug, Clone)]
struct Sent {
    source: i32,
    through: i64,
    items: HashMap<RawId, ItemDelta>,
}

/// Most batches kept waiting for their merge: past this, the oldest is
/// dropped (a merge that never comes must not hold memory forever).
const MAX_SENT: usize = 4096;

/// A learner's item deltas not yet in the merged item states.
#[derive(Debug, Clone, Default)]
pub struct PendingDeltas {
    /// Per source: deltas not handed over yet, and the last rating they cover.
    open: BTreeMap<i32, (i64, HashMap<RawId, ItemDelta>)>,
    /// Handed over, not yet seen merged, oldest first.
    sent: VecDeque<Sent>,
    /// Batches dropped unconfirmed because too many were waiting.
    dropped: u64,
}

impl PendingDeltas {
    /// Adds the delta of the rating at `offset` of `source`.
    pub fn record(&mut self, source: i32, offset: i64, delta: &ItemDelta) {
        let (through, items) = self.open.entry(source).or_default();
        *through = offset;
        match items.get_mut(&delta.id) {
            Some(sum) => sum.add(delta),
            None => {
                items.insert(delta.id.clone(), delta.clone());
            }
        }
    }

    /// The batches to hand over now, one per source with deltas; they stay
    /// pending until merged.
    pub fn take(&mut self) -> Vec<DeltaBatch> {
        let open = std::mem::take(&mut self.open);
        let mut batches = Vec::with_capacity(open.len());
        for (source, (through, items)) in open {
            if items.is_empty() {
                continue;
            }
            batches.push(DeltaBatch {
                source,
                through,
                deltas: items.values().cloned().collect(),
            });
            self.sent.push_back(Sent {
                source,
                through,
                items,
            });
        }
        while self.sent.len() > MAX_SENT {
            self.sent.pop_front();
            self.dropped += 1;
        }
        batches
    }

    /// A merged state of `id` arrived, holding every batch of each source
    /// up to `through[source]`: those shares are no longer pending.
    pub fn merged(&mut self, id: &RawId, through: &BTreeMap<i32, i64>) {
        for sent in &mut self.sent {
            if through
                .get(&sent.source)
                .is_some_and(|&t| t >= sent.through)
            {
                sent.items.remove(id);
            }
        }
        self.sent.retain(|sent| !sent.items.is_empty());
    }

    /// What this learner changed in `id` that the merged state does not
    /// hold yet: handed over but not merged, and not handed over yet.
    pub fn pending(&self, id: &RawId) -> Option<ItemDelta> {
        let sent = self.sent.iter().filter_map(|s| s.items.get(id));
        let open = self.open.values().filter_map(|(_, items)| items.get(id));
        let mut parts = sent.chain(open);
        let mut sum = parts.next()?.clone();
        for part in parts {
            sum.add(part);
        }
        Some(sum)
    }

    /// The items with a pending share, each once.
    pub fn items(&self) -> Vec<RawId> {
        let sent = self.sent.iter().flat_map(|s| s.items.keys());
        let open = self.open.values().flat_map(|(_, items)| items.keys());
        let ids: std::collections::BTreeSet<&RawId> = sent.chain(open).collect();
        ids.into_iter().cloned().collect()
    }

    /// Forgets everything of `source` (its partition moved to another
    /// learner, which hands its deltas over from the published ratings).
    pub fn forget(&mut self, source: i32) {
        self.open.remove(&source);
        self.sent.retain(|s| s.source != source);
    }

    /// Batches dropped unconfirmed because too many were waiting.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(id: &str, x: f32) -> ItemDelta {
        ItemDelta {
            id: RawId::new(id),
            bias: x,
            factors: vec![x, -x],
            count: 1,
        }
    }

    #[test]
    fn deltas_add_up_per_source_and_item_and_hand_over_once() {
        let mut pending = PendingDeltas::default();
        pending.record(0, 10, &delta("a", 1.0));
        pending.record(0, 11, &delta("a", 2.0));
        pending.record(1, 5, &delta("a", 4.0));
        pending.record(0, 12, &delta("b", 8.0));
        let mut batches = pending.take();
        batches
            .iter_mut()
            .for_each(|b| b.deltas.sort_by(|x, y| x.id.cmp(&y.id)));
        assert_eq!(batches.len(), 2);
        assert_eq!((batches[0].source, batches[0].through), (0, 12));
        assert_eq!(batches[0].deltas[0].bias, 3.0);
        assert_eq!(batches[0].deltas[0].count, 2);
        assert_eq!(batches[0].deltas[1].bias, 8.0);
        assert_eq!((batches[1].source, batches[1].through), (1, 5));
        assert!(pending.take().is_empty(), "handed over once");
        assert_eq!(pending.pending(&RawId::new("a")).unwrap().bias, 7.0);
    }

    #[test]
    fn a_share_stops_being_pending_once_the_merge_covers_its_batch() {
        let mut pending = PendingDeltas::default();
        let a = RawId::new("a");
        pending.record(0, 10, &delta("a", 1.0));
        pending.take();
        pending.record(0, 20, &delta("a", 2.0));
        pending.take();
        pending.record(0, 30, &delta("a", 4.0));
        // The merge holds the first batch only.
        pending.merged(&a, &BTreeMap::from([(0, 10)]));
        assert_eq!(pending.pending(&a).unwrap().bias, 6.0);
        // Another source's position says nothing about source 0.
        pending.merged(&a, &BTreeMap::from([(1, 99)]));
        assert_eq!(pending.pending(&a).unwrap().bias, 6.0);
        pending.merged(&a, &BTreeMap::from([(0, 20)]));
        assert_eq!(
            pending.pending(&a).unwrap().bias,
            4.0,
            "the open share stays"
        );
        pending.take();
        pending.merged(&a, &BTreeMap::from([(0, 30)]));
        assert_eq!(pending.pending(&a), None);
        assert!(pending.sent.is_empty(), "nothing kept once merged");
    }

    #[test]
    fn a_forgotten_source_leaves_nothing_pending() {
        let mut pending = PendingDeltas::default();
        pending.record(3, 1, &delta("a", 1.0));
        pending.take();
        pending.record(3, 2, &delta("a", 1.0));
        pending.record(4, 2, &delta("a", 5.0));
        pending.record(4, 3, &delta("b", 1.0));
        assert_eq!(pending.items(), vec![RawId::new("a"), RawId::new("b")]);
        pending.forget(3);
        assert_eq!(pending.pending(&RawId::new("a")).unwrap().bias, 5.0);
    }

    #[test]
    fn a_delta_adds_to_a_state_and_ignores_another_factor_count() {
        let mut state = EntityState {
            id: RawId::new("a"),
            bias: 1.0,
            factors: vec![1.0, 1.0],
            count: 3,
        };
        delta("a", 0.5).add_to(&mut state);
        assert_eq!(
            (state.bias, state.factors.clone(), state.count),
            (1.5, vec![1.5, 0.5], 4)
        );
        let odd = ItemDelta {
            factors: vec![1.0; 3],
            ..delta("a", 0.0)
        };
        odd.add_to(&mut state);
        assert_eq!(state.factors, vec![1.5, 0.5]);
    }
}
