//! What several learners cost in accuracy: the prequential replay with the
//! users split between learners that share item changes only at intervals.
//!
//! This is the learning rule of a group of `recstream learn` processes,
//! without the network: each user belongs to one learner (by a hash of the
//! uid, as ratings partitions are assigned), which alone learns that user's
//! ratings and changes its own copy of each item at once. Every
//! `sync_every` ratings, every learner hands its item deltas over, they are
//! merged into one state per item ([`ItemLedger`]), and each learner's view
//! of a merged item becomes the merged state plus its own changes not merged
//! yet. One learner syncing after every rating is the single writer; the
//! gap between that and more learners, or longer intervals, is the price of
//! learning in parallel.

use serde::Serialize;

use super::prequential::{ContenderReport, Timeline};
use crate::online::{ItemBase, ItemLedger, OnlineLearner, PendingDeltas, PrequentialStats};

/// How a group of learners did on the replay.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleOutReport {
    /// Learners the users were split between.
    pub learners: usize,
    /// Ratings (over all learners) between two syncs of the item deltas.
    pub sync_every: usize,
    /// Items frozen: only users learn, nothing to sync.
    pub freeze_items: bool,
    /// Prequential accuracy over the whole replay.
    pub online: ContenderReport,
}

/// The learner a user belongs to.
pub fn owner(uid: &str, learners: usize) -> usize {
    crc32fast::hash(uid.as_bytes()) as usize % learners.max(1)
}

/// Replays `timeline` through `learners` learners syncing item deltas every
/// `sync_every` ratings.
pub fn replay(
    timeline: &Timeline,
    learners: usize,
    sync_every: usize,
    update_items: bool,
) -> ScaleOutReport {
    let n = learners.max(1);
    let sync_every = sync_every.max(1);
    let base = ItemBase::of(&timeline.model);
    let mut group: Vec<OnlineLearner> = (0..n)
        .map(|_| OnlineLearner::new(timeline.model.clone(), update_items))
        .collect();
    let mut pending = vec![PendingDeltas::default(); n];
    let mut ledger = ItemLedger::default();
    let mut stats = PrequentialStats::default();
    for (offset, (uid, iid, value)) in timeline.future.iter().enumerate() {
        let who = owner(uid, n);
        if let Ok((update, prequential)) = group[who].learn(uid, iid, *value) {
            stats.record(&prequential);
            if let Some(delta) = &update.item_delta {
                pending[who].record(who as i32, offset as i64, delta);
            }
        }
        if (offset + 1) % sync_every == 0 {
            sync(&mut group, &mut pending, &mut ledger, &base);
        }
    }
    ScaleOutReport {
        learners: n,
        sync_every,
        freeze_items: !update_items,
        online: ContenderReport::of(&stats),
    }
}

/// Every learner hands its deltas over; every merged item reaches every learner.
fn sync(
    group: &mut [OnlineLearner],
    pending: &mut [PendingDeltas],
    ledger: &mut ItemLedger,
    base: &ItemBase,
) {
    let batches: Vec<_> = pending.iter_mut().flat_map(PendingDeltas::take).collect();
    for batch in &batches {
        for merged in ledger.merge(batch, base) {
            for (learner, own) in group.iter_mut().zip(pending.iter_mut()) {
                own.merged(&merged.state.id, &merged.through);
                learner.set_item_view(&merged.state, own.pending(&merged.state.id).as_ref());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FitConfig;
    use crate::svd::Hyperparams;
    use crate::synth::{SyntheticSpec, generate};

    fn timeline() -> Timeline {
        let mut data = generate(&SyntheticSpec {
            users: 200,
            items: 100,
            ratings: 8_000,
            seed: 3,
        });
        data.timestamps = (0..data.len() as i64).collect();
        let config = FitConfig {
            params: Hyperparams {
                n_factors: 8,
                n_epochs: 5,
                ..Hyperparams::with_seed(1)
            },
            threads: 1,
            scale: None,
            titles: None,
            source: "synthetic".into(),
        };
        Timeline::cut(&data, 0.5, &config).unwrap()
    }

    #[test]
    fn one_learner_syncing_after_every_rating_is_the_single_writer() {
        let timeline = timeline();
        let mut single = OnlineLearner::new(timeline.model.clone(), true);
        let mut stats = PrequentialStats::default();
        for (uid, iid, value) in &timeline.future {
            if let Ok((_, p)) = single.learn(uid, iid, *value) {
                stats.record(&p);
            }
        }
        let group = replay(&timeline, 1, 1, true);
        assert_eq!(group.online.ratings, stats.count);
        assert!(
            (group.online.rmse - stats.rmse()).abs() < 1e-4,
            "{group:?} {}",
            stats.rmse()
        );
    }

    #[test]
    fn several_learners_learn_every_rating_and_stay_close_to_one() {
        let timeline = timeline();
        let one = replay(&timeline, 1, 1, true);
        let four = replay(&timeline, 4, 100, true);
        assert_eq!(four.online.ratings, one.online.ratings);
        assert!(
            four.online.rmse < one.online.rmse * 1.05,
            "{four:?} against {one:?}"
        );
        let frozen = replay(&timeline, 4, 100, false);
        assert_eq!(frozen.online.ratings, one.online.ratings);
    }
}
