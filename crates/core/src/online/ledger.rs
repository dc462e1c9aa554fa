//! The merged item states: every learner's item deltas added up, each batch
//! counted once.
//!
//! An item's merged state starts from the batch model ([`ItemBase`]: its
//! trained state, or the first factors every learner gives a newcomer) and
//! adds the [`DeltaBatch`]es of all learners. Each merged state carries, per
//! source, the last rating whose delta it holds ([`MergedItem::through`]),
//! and a batch is added to an item only when it goes past that. So a batch
//! delivered twice, or sent again by a learner that took a source over after
//! a crash, is counted once, and the state alone, as published, says what it
//! holds: a merger restored from the published states needs nothing else.

use std::collections::{BTreeMap, HashMap};

use super::{DeltaBatch, Entity, EntityState, initial_factors};
use crate::ids::{IdMap, RawId};
use crate::model::Model;
use crate::svd::Hyperparams;

/// An item's state as merged from every learner's deltas.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MergedItem {
    /// The state.
    pub state: EntityState,
    /// Per source (ratings partition), the last rating whose delta it holds.
    pub through: BTreeMap<i32, i64>,
}

/// The items as the batch model has them: where every merge starts.
#[derive(Debug, Clone)]
pub struct ItemBase {
    ids: IdMap,
    bias: Vec<f32>,
    factors: Vec<f32>,
    counts: Vec<u32>,
    k: usize,
    params: Hyperparams,
}

impl ItemBase {
    /// The items of `model`, copied as they are now.
    pub fn of(model: &Model) -> Self {
        let svd = &model.svd;
        let n = svd.n_items();
        ItemBase {
            ids: model.items.clone(),
            bias: svd.item_bias[..n].to_vec(),
            factors: (0..n as u32)
                .flat_map(|i| svd.item_row(i).to_vec())
                .collect(),
            counts: svd.item_counts[..n].to_vec(),
            k: svd.n_factors,
            params: model.meta.params.clone(),
        }
    }

    /// The state `id` starts from: trained, or a newcomer's.
    pub fn state(&self, id: &RawId) -> EntityState {
        match self.ids.get(id.as_str()) {
            Some(i) => {
                let i = i as usize;
                EntityState {
                    id: id.clone(),
                    bias: self.bias[i],
                    factors: self.factors[i * self.k..(i + 1) * self.k].to_vec(),
                    count: self.counts[i],
                }
            }
            None => EntityState {
                id: id.clone(),
                bias: 0.0,
                factors: initial_factors(&self.params, self.k, Entity::Item, id.as_str()),
                count: 0,
            },
        }
    }
}

/// The merged states of the items one merger owns.
#[derive(Debug, Clone, Default)]
pub struct ItemLedger {
    items: HashMap<RawId, MergedItem>,
}

impl ItemLedger {
    /// Takes a published merged state (a restart reading its own output).
    pub fn restore(&mut self, item: MergedItem) {
        self.items.insert(item.state.id.clone(), item);
    }

    /// Adds `batch` to each of its items that does not hold it yet, and
    /// returns the states that changed.
    pub fn merge(&mut self, batch: &DeltaBatch, base: &ItemBase) -> Vec<MergedItem> {
        let mut changed = Vec::new();
        for delta in &batch.deltas {
            let item = self
                .items
                .entry(delta.id.clone())
                .or_insert_with(|| MergedItem {
                    state: base.state(&delta.id),
                    through: BTreeMap::new(),
                });
            let held = item.through.get(&batch.source).copied();
            if held.is_some_and(|t| t >= batch.through) {
                continue;
            }
            delta.add_to(&mut item.state);
            item.through.insert(batch.source, batch.through);
            changed.push(item.clone());
        }
        changed
    }

    /// The merged state of `id`, if any delta reached it.
    pub fn get(&self, id: &RawId) -> Option<&MergedItem> {
        self.items.get(id)
    }

    /// Forgets the items `drop` picks (their owner is another merger now).
    pub fn forget(&mut self, mut drop: impl FnMut(&RawId) -> bool) {
        self.items.retain(|id, _| !drop(id));
    }

    /// Every merged state, in no particular order.
    pub fn items(&self) -> impl Iterator<Item = &MergedItem> {
        self.items.values()
    }

    /// Items merged.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no item was merged.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::online::{ItemDelta, OnlineLearner, PendingDeltas};

    fn base_model() -> Model {
        crate::synth::random_model(30, 20, 6, 5, 1)
    }

    fn batch(source: i32, through: i64, id: &str, x: f32) -> DeltaBatch {
        DeltaBatch {
            source,
            through,
            deltas: vec![ItemDelta {
                id: RawId::new(id),
                bias: x,
                factors: vec![x; base_model().svd.n_factors],
                count: 1,
            }],
        }
    }

    #[test]
    fn a_batch_is_counted_once_however_often_it_arrives() {
        let model = base_model();
        let base = ItemBase::of(&model);
        let id = model.items.raw(0).unwrap().clone();
        let start = base.state(&id);
        let mut ledger = ItemLedger::default();
        assert_eq!(
            ledger.merge(&batch(0, 10, id.as_str(), 1.0), &base).len(),
            1
        );
        assert!(
            ledger
                .merge(&batch(0, 10, id.as_str(), 1.0), &base)
                .is_empty()
        );
        assert!(
            ledger
                .merge(&batch(0, 7, id.as_str(), 1.0), &base)
                .is_empty(),
            "older"
        );
        assert_eq!(
            ledger.merge(&batch(1, 3, id.as_str(), 2.0), &base).len(),
            1,
            "another source"
        );
        let merged = ledger.get(&id).unwrap();
        assert!((merged.state.bias - (start.bias + 3.0)).abs() < 1e-6);
        assert_eq!(merged.state.count, start.count + 2);
        assert_eq!(merged.through, BTreeMap::from([(0, 10), (1, 3)]));
    }

    #[test]
    fn a_merger_restored_from_its_published_states_counts_nothing_twice() {
        let model = base_model();
        let base = ItemBase::of(&model);
        let mut ledger = ItemLedger::default();
        let published = ledger.merge(&batch(2, 5, "new-movie", 1.0), &base);
        let mut restored = ItemLedger::default();
        published
            .into_iter()
            .for_each(|item| restored.restore(item));
        // The learner that took source 2 over sends the batch again, then more.
        assert!(
            restored
                .merge(&batch(2, 5, "new-movie", 1.0), &base)
                .is_empty()
        );
        restored.merge(&batch(2, 9, "new-movie", 1.0), &base);
        let state = &restored.get(&RawId::new("new-movie")).unwrap().state;
        assert_eq!(state.count, 2);
        assert!(
            (state.bias - 2.0).abs() < 1e-6,
            "a newcomer starts at bias 0"
        );
    }

    proptest! {
        /// Two learners with their own sync points, their batches merged in
        /// any order, some twice: the merged item is the base plus every
        /// learner's change, and once all is merged nothing is pending.
        #[test]
        fn merged_items_hold_every_learners_change_once(
            ratings in prop::collection::vec((0usize..2, 1u8..=5, any::<bool>()), 1..60),
            replay in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let model = base_model();
            let base = ItemBase::of(&model);
            let iid = model.items.raw(0).unwrap().clone();
            let mut learners: Vec<OnlineLearner> =
                (0..2).map(|_| OnlineLearner::new(model.clone(), true)).collect();
            let mut pending = vec![PendingDeltas::default(), PendingDeltas::default()];
            let mut ledger = ItemLedger::default();
            let mut all = Vec::new();
            let mut total = base.state(&iid);
            for (offset, &(who, rating, sync)) in ratings.iter().enumerate() {
                let uid = format!("{}", who * 100 + offset % 3);
                let (update, _) = learners[who].learn(&uid, iid.as_str(), f32::from(rating)).unwrap();
                let delta = update.item_delta.unwrap();
                delta.add_to(&mut total);
                pending[who].record(who as i32, offset as i64, &delta);
                if sync {
                    for batch in pending[who].take() {
                        all.push(batch.clone());
                        for merged in ledger.merge(&batch, &base) {
                            for (l, p) in learners.iter_mut().zip(pending.iter_mut()) {
                                p.merged(&merged.state.id, &merged.through);
                                l.set_item_view(&merged.state, p.pending(&merged.state.id).as_ref());
                            }
                        }
                    }
                }
            }
            for p in &mut pending {
                for batch in p.take() {
                    all.push(batch.clone());
                    ledger.merge(&batch, &base);
                }
            }
            for index in replay {
                if !all.is_empty() {
                    ledger.merge(index.get(&all), &base);
                }
            }
            let merged = ledger.get(&iid).unwrap();
            for p in &mut pending {
                p.merged(&iid, &merged.through);
                prop_assert!(p.pending(&iid).is_none(), "everything merged is no longer pending");
            }
            let merged = &merged.state;
            prop_assert_eq!(merged.count, total.count);
            prop_assert!((merged.bias - total.bias).abs() < 1e-4);
            for (a, b) in merged.factors.iter().zip(&total.factors) {
                prop_assert!((a - b).abs() < 1e-4);
            }
        }
    }
}
