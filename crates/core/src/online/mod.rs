//! Online learning: folding ratings into a trained model one at a time, as they arrive.
//!
//! An [`OnlineLearner`] applies the training rule to each new rating (one
//! SGD step on the user's bias and factors and the item's bias, and on the
//! item's factors when enabled), adds users and items it has never seen with
//! fresh factors, and marks the item as rated by the user, so their next
//! recommendations change at once. Before learning from a rating it scores
//! it (test-then-learn), which gives honest running accuracy figures. A
//! rating outside the model's scale, or one that would make a parameter NaN
//! or infinite, is refused and leaves the model as it was.
//!
//! Each rating yields an [`Update`]: the full new state of the user and of
//! the item, with a sequence number. Full states rather than differences make
//! updates idempotent and safe to compact: a follower that applies the
//! latest update of every user and item, in order, ends with exactly the
//! learner's model ([`Recommender::apply`]).
//!
//! Several learners can share one model, each owning a part of the users:
//! an update also carries the item's [`ItemDelta`], what this rating changed
//! in the item, which the owners of the items add up ([`ItemLedger`]) from
//! every learner's batches ([`PendingDeltas`]). For that to add up, a new
//! user's or item's first factors are a function of its id and the model's
//! seed ([`initial_factors`]), the same in every learner.
//!
//! - `deltas`: a learner's item deltas, batched per source and held until merged;
//! - `ledger`: the merged item states, each delta batch counted once.

mod deltas;
mod ledger;

pub use deltas::{DeltaBatch, ItemDelta, PendingDeltas};
pub use ledger::{ItemBase, ItemLedger, MergedItem};

use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::svd::Hyperparams;

use crate::ids::RawId;
use crate::model::{Model, OnlineState};
use crate::recommend::{Recommender, Scratch};
use crate::svd::kernels::{self, StepRates, StepRow};

/// The state of a user or an item after an update.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EntityState {
    /// Raw id.
    pub id: RawId,
    /// Bias.
    pub bias: f32,
    /// Factors.
    pub factors: Vec<f32>,
    /// Ratings learnt from, training included.
    pub count: u32,
}

/// What one rating changed, as a follower needs it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Update {
    /// Position in the learner's sequence of updates (1, 2, ...).
    pub seq: u64,
    /// The batch model the update applies to.
    pub base_id: String,
    /// The user's new state.
    pub user: EntityState,
    /// Items the user rated since the batch model, all of them.
    pub user_rated: Vec<RawId>,
    /// The item's new state.
    pub item: EntityState,
    /// What this rating changed in the item (`None` with items frozen).
    pub item_delta: Option<ItemDelta>,
}

/// How a rating was predicted before the model learnt from it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prequential {
    /// Estimate before learning (clipped, with surprise's fallbacks).
    pub predicted: f32,
    /// The actual rating.
    pub actual: f32,
    /// For a user the model knew: was the item among their top 10?
    pub hit_at_10: Option<bool>,
}

/// Why a rating cannot be learnt.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OnlineError {
    /// The rating is not a finite number within the model's scale.
    #[error("rating {value} is outside the model's scale {min}..={max}")]
    OutOfScale {
        /// The rating.
        value: f32,
        /// Lowest allowed.
        min: f32,
        /// Highest allowed.
        max: f32,
    },
    /// One SGD step on this rating would make a bias or factor NaN or
    /// infinite (a learning rate far too high, or parameters near overflow).
    #[error(
        "learning rating {value} of user {user} for item {item} would make the model's parameters non-finite (NaN or infinity); the rating was refused and the model left unchanged"
    )]
    NonFinite {
        /// Raw user id.
        user: String,
        /// Raw item id.
        item: String,
        /// The rating.
        value: f32,
    },
}

/// A model that keeps learning.
#[derive(Debug)]
pub struct OnlineLearner {
    recommender: Recommender,
    rates: StepRates,
    update_items: bool,
    seq: u64,
    base_id: String,
    scratch: Scratch,
}

impl OnlineLearner {
    /// Starts learning on top of `model` (a batch model, or a snapshot of
    /// an earlier learner, whose sequence then continues). With
    /// `update_items` false, items stay as trained: only users learn.
    pub fn new(model: Model, update_items: bool) -> Self {
        let params = model.meta.params.clone();
        let (base_id, seq) = match &model.meta.online {
            Some(state) => (state.base_id.clone(), state.seq),
            None => (model.id.clone(), 0),
        };
        OnlineLearner {
            rates: StepRates::from(&params),
            update_items,
            seq,
            base_id,
            recommender: Recommender::new(model),
            scratch: Scratch::default(),
        }
    }

    /// The model as learnt so far.
    pub fn recommender(&self) -> &Recommender {
        &self.recommender
    }

    /// Sequence number of the last update.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The batch model the updates apply to.
    pub fn base_id(&self) -> &str {
        &self.base_id
    }

    /// Applies a user state published earlier (rebuilding state after a
    /// restart, or another learner's user). States for another batch model
    /// are ignored.
    pub fn replay_user(&mut self, base_id: &str, state: &EntityState, rated: &[RawId]) {
        if base_id == self.base_id {
            self.recommender.apply_user(state, rated);
        }
    }

    /// Scores the rating, then learns from it. A rating that is not a finite
    /// number within the model's scale, or whose step would make a bias or
    /// factor NaN or infinite, is an error and changes nothing.
    pub fn learn(
        &mut self,
        uid: &str,
        iid: &str,
        rating: f32,
    ) -> Result<(Update, Prequential), OnlineError> {
        let scale = self.recommender.model().svd.scale;
        if !rating.is_finite() || rating < scale.min || rating > scale.max {
            return Err(OnlineError::OutOfScale {
                value: rating,
                min: scale.min,
                max: scale.max,
            });
        }
        let prequential = self.predict(uid, iid, rating);
        // The step runs on copies first: a rating that would make a parameter
        // NaN or infinite is refused before anything changes.
        let model = self.recommender.model();
        let svd = &model.svd;
        let (user, item) = (model.users.get(uid), model.items.get(iid));
        let params = &model.meta.params;
        let mut pu = match user {
            Some(u) => svd.user_row(u).to_vec(),
            None => initial_factors(params, svd.n_factors, Entity::User, uid),
        };
        let mut qi = match item {
            Some(i) => svd.item_row(i).to_vec(),
            None => initial_factors(params, svd.n_factors, Entity::Item, iid),
        };
        let (pu_initial, qi_initial) = (pu.clone(), qi.clone());
        let mut bu = user.map_or(0.0, |u| svd.user_bias[u as usize]);
        let mut bi = item.map_or(0.0, |i| svd.item_bias[i as usize]);
        let row = StepRow {
            bu: &mut bu,
            bi: &mut bi,
            pu: &mut pu,
            qi: &mut qi,
        };
        let bi_initial = item.map_or(0.0, |i| svd.item_bias[i as usize]);
        kernels::sgd_step(rating, svd.global_mean, row, &self.rates);
        let finite = |xs: &[f32]| xs.iter().all(|x| x.is_finite());
        let items_finite = !self.update_items || (bi.is_finite() && finite(&qi));
        if !(bu.is_finite() && finite(&pu) && items_finite) {
            return Err(OnlineError::NonFinite {
                user: uid.to_string(),
                item: iid.to_string(),
                value: rating,
            });
        }
        let user = self.intern(uid, true, &pu_initial);
        let item = self.intern(iid, false, &qi_initial);
        let model = self.recommender.model_mut();
        let svd = &mut model.svd;
        svd.user_bias[user as usize] = bu;
        svd.user_row_mut(user).copy_from_slice(&pu);
        svd.user_counts[user as usize] += 1;
        // With items frozen, the item keeps its state: only the user learnt.
        let item_delta = self.update_items.then(|| {
            svd.item_bias[item as usize] = bi;
            svd.item_row_mut(item).copy_from_slice(&qi);
            svd.item_counts[item as usize] += 1;
            ItemDelta {
                id: RawId::new(iid),
                bias: bi - bi_initial,
                factors: qi.iter().zip(&qi_initial).map(|(a, b)| a - b).collect(),
                count: 1,
            }
        });
        model.seen.insert(user, item);
        self.seq += 1;
        let mut update = self.state_update(user, item);
        update.item_delta = item_delta;
        self.recommender.apply(&update);
        Ok((update, prequential))
    }

    /// Sets the learner's view of an item: its merged state (from every
    /// learner) plus what this learner changed that the merge does not hold
    /// yet (`pending`).
    pub fn set_item_view(&mut self, merged: &EntityState, pending: Option<&ItemDelta>) {
        match pending {
            Some(delta) => {
                let mut view = merged.clone();
                delta.add_to(&mut view);
                self.recommender.apply_item(&view);
            }
            None => self.recommender.apply_item(merged),
        }
    }

    fn predict(&mut self, uid: &str, iid: &str, rating: f32) -> Prequential {
        let model = self.recommender.model();
        let user = model.users.get(uid).filter(|&u| model.svd.knows_user(u));
        let item = model.items.get(iid);
        let predicted = model.svd.predict(user, item);
        let hit_at_10 = user.map(|_| {
            let top = self.recommender.recommend_with(uid, 10, &mut self.scratch);
            top.recommendations.iter().any(|r| r.iid.as_str() == iid)
        });
        Prequential {
            predicted,
            actual: rating,
            hit_at_10,
        }
    }

    /// The dense index of an id, adding it with `factors` when new.
    fn intern(&mut self, raw: &str, is_user: bool, factors: &[f32]) -> u32 {
        let model = self.recommender.model_mut();
        let map = if is_user { &model.users } else { &model.items };
        if let Some(index) = map.get(raw) {
            return index;
        }
        if is_user {
            model.users.intern(raw);
            let u = model.svd.push_user(0.0, factors);
            model.seen.ensure_users(model.svd.n_users());
            u
        } else {
            model.items.intern(raw);
            model.titles.push(String::new());
            model.svd.push_item(0.0, factors)
        }
    }

    fn state_update(&self, user: u32, item: u32) -> Update {
        let model = self.recommender.model();
        let svd = &model.svd;
        let raw =
            |map: &crate::ids::IdMap, i: u32| map.raw(i).cloned().unwrap_or_else(|| RawId::new(""));
        Update {
            seq: self.seq,
            base_id: self.base_id.clone(),
            user: EntityState {
                id: raw(&model.users, user),
                bias: svd.user_bias[user as usize],
                factors: svd.user_row(user).to_vec(),
                count: svd.user_counts[user as usize],
            },
            user_rated: model
                .seen
                .added_row(user)
                .iter()
                .map(|&i| raw(&model.items, i))
                .collect(),
            item: EntityState {
                id: raw(&model.items, item),
                bias: svd.item_bias[item as usize],
                factors: svd.item_row(item).to_vec(),
                count: svd.item_counts[item as usize],
            },
            item_delta: None,
        }
    }

    /// The model with its online state, ready to be written as a snapshot,
    /// with `items` written over the learner's view of them (for a group of
    /// learners: the merged states, without this learner's pending changes).
    pub fn snapshot_with(
        &self,
        positions: std::collections::BTreeMap<String, i64>,
        items: &[EntityState],
    ) -> Model {
        let mut model = self.snapshot(positions);
        for state in items {
            if let Some(i) = model.items.get(state.id.as_str()) {
                write_state(&mut model.svd, i, state, Entity::Item);
            }
        }
        model
    }

    /// The model with its online state, ready to be written as a snapshot.
    pub fn snapshot(&self, positions: std::collections::BTreeMap<String, i64>) -> Model {
        let mut model = self.recommender.model().clone();
        model.meta.online = Some(OnlineState {
            base_id: self.base_id.clone(),
            seq: self.seq,
            positions,
            resume: None,
        });
        model
    }
}

/// Users or items: their first factors are drawn from different streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    /// A user.
    User,
    /// An item.
    Item,
}

/// The first factors of a user or item the model has never seen: drawn
/// like training draws them (normal, `init_mean`, `init_std_dev`), from a
/// stream seeded by the model's seed and the raw id, so that every learner
/// gives a newcomer the same factors and their changes add up.
pub fn initial_factors(params: &Hyperparams, k: usize, entity: Entity, raw: &str) -> Vec<f32> {
    let Ok(normal) = Normal::new(params.init_mean, params.init_std_dev) else {
        return vec![0.0; k];
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[entity as u8]);
    hasher.update(raw.as_bytes());
    let id_seed = (u64::from(hasher.finalize()) << 32) | raw.len() as u64;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(params.seed ^ 0x6f6e_6c69_6e65 ^ id_seed);
    (0..k).map(|_| normal.sample(&mut rng)).collect()
}

/// Running prequential accuracy: RMSE and hit rate at 10.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PrequentialStats {
    /// Ratings scored.
    pub count: u64,
    squared: f64,
    /// Ratings from users the model knew (hit rate denominator).
    pub known: u64,
    /// Of those, how many items were in the user's top 10 beforehand.
    pub hits: u64,
}

impl PrequentialStats {
    /// Adds one scored rating.
    pub fn record(&mut self, p: &Prequential) {
        self.count += 1;
        self.squared += f64::from(p.predicted - p.actual).powi(2);
        if let Some(hit) = p.hit_at_10 {
            self.known += 1;
            self.hits += u64::from(hit);
        }
    }

    /// Root mean squared error so far.
    pub fn rmse(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            (self.squared / self.count as f64).sqrt()
        }
    }

    /// Fraction of known users' ratings whose item was in their top 10.
    pub fn hit_rate(&self) -> f64 {
        if self.known == 0 {
            0.0
        } else {
            self.hits as f64 / self.known as f64
        }
    }
}

impl Recommender {
    /// Applies a learner's update: the item's and the user's new states
    /// (adding them if new) and the items the user rated since the batch
    /// model. The version becomes `<base id>+<seq>`.
    pub fn apply(&mut self, update: &Update) {
        self.apply_item(&update.item);
        self.apply_user(&update.user, &update.user_rated);
        self.set_version(format!("{}+{}", update.base_id, update.seq));
    }

    /// Sets a user's state and the items they rated since the batch model.
    /// Items not known yet are added as placeholders (not recommendable
    /// until their own state arrives), so the order in which user and item
    /// states arrive does not matter.
    pub fn apply_user(&mut self, state: &EntityState, rated: &[RawId]) {
        let user = self.ensure_entity(state, true);
        let rated: Vec<u32> = rated
            .iter()
            .map(|iid| self.item_or_placeholder(iid.as_str()))
            .collect();
        let model = self.model_mut();
        model.seen.ensure_users(model.svd.n_users());
        model.seen.set_added_row(user, rated);
    }

    /// Sets an item's state (adding the item if new) and makes it recommendable.
    pub fn apply_item(&mut self, state: &EntityState) {
        let item = self.ensure_entity(state, false);
        self.refresh_item(item);
    }

    fn item_or_placeholder(&mut self, iid: &str) -> u32 {
        let model = self.model_mut();
        if let Some(i) = model.items.get(iid) {
            return i;
        }
        let k = model.svd.n_factors;
        model.items.intern(iid);
        model.titles.push(String::new());
        let item = model.svd.push_item(0.0, &vec![0.0; k]);
        self.refresh_item(item);
        item
    }

    fn ensure_entity(&mut self, state: &EntityState, is_user: bool) -> u32 {
        let model = self.model_mut();
        let k = model.svd.n_factors;
        let known = if is_user {
            model.users.get(state.id.as_str())
        } else {
            model.items.get(state.id.as_str())
        };
        let index = match known {
            Some(index) => index,
            None if is_user => {
                model.users.intern(state.id.as_str());
                let u = model.svd.push_user(0.0, &vec![0.0; k]);
                model.seen.ensure_users(model.svd.n_users());
                u
            }
            None => {
                model.items.intern(state.id.as_str());
                model.titles.push(String::new());
                model.svd.push_item(0.0, &vec![0.0; k])
            }
        };
        let entity = if is_user { Entity::User } else { Entity::Item };
        write_state(&mut model.svd, index, state, entity);
        index
    }
}

/// Writes `state` into row `index` of the users or items; a state with
/// another factor count is not this model's and changes nothing.
fn write_state(svd: &mut crate::svd::SvdModel, index: u32, state: &EntityState, entity: Entity) {
    if state.factors.len() != svd.n_factors {
        return;
    }
    let i = index as usize;
    match entity {
        Entity::User => {
            svd.user_bias[i] = state.bias;
            svd.user_row_mut(index).copy_from_slice(&state.factors);
            svd.user_counts[i] = state.count;
        }
        Entity::Item => {
            svd.item_bias[i] = state.bias;
            svd.item_row_mut(index).copy_from_slice(&state.factors);
            svd.item_counts[i] = state.count;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::model::FitConfig;
    use crate::svd::Hyperparams;

    fn base() -> Model {
        let mut data = Dataset::default();
        for u in 0..30 {
            for i in 0..20 {
                if (u * 7 + i * 3) % 4 != 0 {
                    let r = 1.0 + ((u + 2 * i) % 5) as f32;
                    data.push(&u.to_string(), &format!("m{i}"), r, None);
                }
            }
        }
        let config = FitConfig {
            params: Hyperparams {
                n_factors: 6,
                n_epochs: 10,
                ..Hyperparams::with_seed(3)
            },
            threads: 1,
            scale: None,
            titles: None,
            source: "test".into(),
        };
        let mut model = Model::fit(&data, &config, &mut |_| {}).unwrap();
        model.id = "base".into();
        model
    }

    #[test]
    fn a_rating_changes_the_users_next_recommendations_at_once() {
        let mut learner = OnlineLearner::new(base(), true);
        let before = learner.recommender().recommend("3", 20);
        let top = before.recommendations[0].iid.clone();
        let (update, _) = learner.learn("3", top.as_str(), 1.0).unwrap();
        assert_eq!(update.seq, 1);
        let after = learner.recommender().recommend("3", 20);
        assert!(
            after.recommendations.iter().all(|r| r.iid != top),
            "a rated item is never recommended again"
        );
        assert_eq!(after.model_version, "base+1");
    }

    #[test]
    fn new_users_and_items_become_known_and_recommendable() {
        let mut learner = OnlineLearner::new(base(), true);
        assert!(learner.recommender().recommend("newcomer", 5).cold_start);
        learner.learn("newcomer", "m1", 5.0).unwrap();
        learner.learn("newcomer", "m2", 4.0).unwrap();
        let answer = learner.recommender().recommend("newcomer", 30);
        assert!(!answer.cold_start);
        assert!(
            answer
                .recommendations
                .iter()
                .all(|r| r.iid.as_str() != "m1" && r.iid.as_str() != "m2")
        );
        let (update, _) = learner.learn("3", "brand-new-movie", 5.0).unwrap();
        assert_eq!(update.item.count, 1);
        let found = (0..30).any(|u| {
            learner
                .recommender()
                .recommend(&u.to_string(), 30)
                .recommendations
                .iter()
                .any(|r| r.iid.as_str() == "brand-new-movie")
        });
        assert!(found, "a new item can be recommended to someone");
    }

    #[test]
    fn followers_applying_the_updates_end_with_identical_scores() {
        let mut learner = OnlineLearner::new(base(), true);
        let mut follower = Recommender::new(base());
        let mut updates = Vec::new();
        for (n, (u, i, r)) in [
            ("1", "m3", 5.0),
            ("new", "m4", 2.0),
            ("1", "fresh", 4.0),
            ("7", "m3", 1.0),
            ("new", "m3", 5.0),
        ]
        .into_iter()
        .enumerate()
        {
            let (update, _) = learner.learn(u, i, r).unwrap();
            assert_eq!(update.seq, n as u64 + 1);
            updates.push(update);
        }
        for update in &updates {
            follower.apply(update);
        }
        for uid in ["1", "new", "7", "12"] {
            assert_eq!(
                follower.recommend(uid, 25),
                learner.recommender().recommend(uid, 25),
                "{uid}"
            );
        }
        // Compaction keeps only the last state per user and per item, in log
        // order; applying just those gives the same model.
        let mut log: Vec<(String, u64, bool)> = Vec::new();
        for update in &updates {
            log.push((format!("item:{}", update.item.id), update.seq, false));
            log.push((format!("user:{}", update.user.id), update.seq, true));
        }
        let last_of = |key: &str| log.iter().rposition(|(k, _, _)| k == key);
        let mut compacted = Recommender::new(base());
        for (at, (key, seq, is_user)) in log.iter().enumerate() {
            if last_of(key) != Some(at) {
                continue;
            }
            let update = &updates[(*seq - 1) as usize];
            if *is_user {
                compacted.apply_user(&update.user, &update.user_rated);
            } else {
                compacted.apply_item(&update.item);
            }
        }
        for uid in ["1", "new", "7"] {
            assert_eq!(
                compacted.recommend(uid, 25).recommendations,
                learner.recommender().recommend(uid, 25).recommendations,
                "{uid} after compaction"
            );
        }
    }

    #[test]
    fn frozen_items_keep_their_state_and_yield_no_delta() {
        let mut learner = OnlineLearner::new(base(), false);
        let svd = &learner.recommender().model().svd;
        let (factors, bias) = (svd.item_row(0).to_vec(), svd.item_bias[0]);
        let iid = learner.recommender().model().items.raw(0).unwrap().clone();
        let (update, _) = learner.learn("2", iid.as_str(), 5.0).unwrap();
        assert_eq!((update.item.factors, update.item.bias), (factors, bias));
        assert_eq!(update.item_delta, None);
        assert_ne!(
            update.user.factors,
            learner.recommender().model().svd.user_row(0)
        );
    }

    #[test]
    fn an_item_delta_is_the_change_of_the_item_and_adds_back_to_its_state() {
        let mut learner = OnlineLearner::new(base(), true);
        for iid in ["m1", "a-new-movie"] {
            let before = learner.recommender().model().items.get(iid).map(|i| {
                let svd = &learner.recommender().model().svd;
                (
                    svd.item_bias[i as usize],
                    svd.item_row(i).to_vec(),
                    svd.item_counts[i as usize],
                )
            });
            let (bias, factors, count) = before.unwrap_or_else(|| {
                let model = learner.recommender().model();
                let k = model.svd.n_factors;
                (
                    0.0,
                    initial_factors(&model.meta.params, k, Entity::Item, iid),
                    0,
                )
            });
            let (update, _) = learner.learn("2", iid, 1.0).unwrap();
            let delta = update.item_delta.unwrap();
            let mut rebuilt = EntityState {
                id: RawId::new(iid),
                bias,
                factors,
                count,
            };
            delta.add_to(&mut rebuilt);
            assert_eq!(rebuilt.count, update.item.count, "{iid}");
            assert!((rebuilt.bias - update.item.bias).abs() < 1e-6, "{iid}");
            for (a, b) in rebuilt.factors.iter().zip(&update.item.factors) {
                assert!((a - b).abs() < 1e-6, "{iid}: {a} {b}");
            }
        }
    }

    #[test]
    fn every_learner_gives_a_newcomer_the_same_first_factors() {
        let params = base().meta.params;
        let a = initial_factors(&params, 6, Entity::User, "newcomer");
        assert_eq!(a, initial_factors(&params, 6, Entity::User, "newcomer"));
        assert_ne!(a, initial_factors(&params, 6, Entity::Item, "newcomer"));
        assert_ne!(a, initial_factors(&params, 6, Entity::User, "newcomer2"));
        let mut one = OnlineLearner::new(base(), true);
        let mut other = OnlineLearner::new(base(), true);
        other.learn("1", "m1", 4.0).unwrap();
        let (a, _) = one.learn("newcomer", "new-movie", 4.0).unwrap();
        let (b, _) = other.learn("newcomer", "new-movie", 4.0).unwrap();
        assert_eq!(a.user.factors, b.user.factors);
    }

    #[test]
    fn out_of_scale_ratings_are_refused_and_change_nothing() {
        let mut learner = OnlineLearner::new(base(), true);
        assert!(matches!(
            learner.learn("1", "m1", 9.0),
            Err(OnlineError::OutOfScale { .. })
        ));
        assert!(learner.learn("1", "m1", f32::NAN).is_err());
        assert_eq!(learner.seq(), 0);
    }

    #[test]
    fn a_step_that_would_overflow_is_refused_and_changes_nothing() {
        let mut model = base();
        // Finite (training's checks accept it), but one step with an error
        // of 2 or more overflows f32.
        model.meta.params.lr_bu = 3e38;
        model.meta.params.lr_pu = 3e38;
        let mut learner = OnlineLearner::new(model, true);
        let before = learner.recommender().model().clone();
        for (uid, iid) in [
            ("1", "m1"),
            ("newcomer", "m1"),
            ("1", "new-movie"),
            ("x", "y"),
        ] {
            let (u, i) = (before.users.get(uid), before.items.get(iid));
            // At least 2 away from the estimate.
            let rating = if before.svd.raw_estimate(u, i) < 3.0 {
                5.0
            } else {
                1.0
            };
            let err = learner.learn(uid, iid, rating).map(|_| ()).unwrap_err();
            assert!(err.to_string().contains("non-finite"), "{err}");
            assert_eq!(learner.seq(), 0);
            assert!(
                learner.recommender().model() == &before,
                "{uid} {iid}: the model changed"
            );
            assert_eq!(learner.recommender().version(), "base");
        }
    }

    #[test]
    fn a_refused_rating_leaves_no_trace_in_later_updates() {
        let mut hot = base();
        hot.meta.params.lr_bu = 3e38;
        let mut refused = OnlineLearner::new(hot.clone(), true);
        refused
            .learn("newcomer", "m1", 5.0)
            .map(|_| ())
            .unwrap_err();
        let mut sane = OnlineLearner::new(hot, true);
        let state = |l: &OnlineLearner| l.recommender().model().clone();
        assert!(state(&sane) == state(&refused));
        // And what comes next is what it would have been without it.
        let next = |l: &mut OnlineLearner| l.learn("1", "m2", 3.0).map(|(u, _)| u);
        assert_eq!(next(&mut sane), next(&mut refused));
    }

    #[test]
    fn snapshots_resume_the_sequence_and_version() {
        let mut learner = OnlineLearner::new(base(), true);
        learner.learn("1", "m1", 4.0).unwrap();
        learner.learn("2", "m2", 3.0).unwrap();
        let snapshot = learner.snapshot([("ratings/0".to_string(), 17)].into_iter().collect());
        assert_eq!(snapshot.version(), "base+2");
        let resumed = OnlineLearner::new(snapshot, true);
        assert_eq!((resumed.seq(), resumed.base_id()), (2, "base"));
    }

    /// A learner restarted from its snapshot file must still publish every
    /// item a user rated since the batch model: a worker that has followed
    /// since the batch model replaces the user's rated list with it, and
    /// would otherwise recommend an item the user rated before the restart.
    #[test]
    fn a_learner_resumed_from_a_snapshot_file_still_reports_all_items_rated_since_the_batch() {
        let unrated = |model: &Model, uid: &str| {
            let u = model.users.get(uid).unwrap();
            (0..model.svd.n_items() as u32)
                .find(|&i| !model.seen.contains(u, i))
                .map(|i| model.items.raw(i).unwrap().to_string())
                .unwrap()
        };
        let batch = base();
        let item = unrated(&batch, "3");
        let mut follower = Recommender::new(batch.clone());
        let mut learner = OnlineLearner::new(batch, true);
        follower.apply(&learner.learn("3", &item, 5.0).unwrap().0);

        let path = std::path::Path::new("snapshot.rsm");
        let file = crate::modelfile::encode(&learner.snapshot(Default::default()), path).unwrap();
        let mut resumed = OnlineLearner::new(crate::modelfile::decode(&file, path).unwrap(), true);
        let (update, _) = resumed.learn("3", &item, 5.0).unwrap();
        assert_eq!(
            update.user_rated,
            vec![RawId::new(item.as_str())],
            "everything rated since the batch model"
        );
        follower.apply(&update);
        let served = follower.recommend("3", 100);
        assert!(
            served
                .recommendations
                .iter()
                .all(|r| r.iid.as_str() != item),
            "a follower never recommends {item}, rated before the learner's restart"
        );
        assert_eq!(
            served.recommendations,
            resumed.recommender().recommend("3", 100).recommendations
        );
    }

    #[test]
    fn prequential_stats_accumulate() {
        let mut stats = PrequentialStats::default();
        stats.record(&Prequential {
            predicted: 4.0,
            actual: 5.0,
            hit_at_10: Some(true),
        });
        stats.record(&Prequential {
            predicted: 3.0,
            actual: 3.0,
            hit_at_10: None,
        });
        assert!((stats.rmse() - (0.5f64).sqrt()).abs() < 1e-9);
        assert_eq!(stats.hit_rate(), 1.0);
    }
}
