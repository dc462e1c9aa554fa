//! Synthetic rating data with a known low-rank structure, for offline tests and scale benchmarks.
//!
//! MovieLens may not be redistributed and the 25M set is too large to fetch in
//! a test, so tests that must run offline, and the ML-25M-sized training
//! benchmark, generate data instead: users and items with hidden biases and
//! factors, item popularity with a long tail, user activity that varies a lot
//! (as in MovieLens, every user has at least a handful of ratings), and
//! ratings `round(3.5 + b_u + b_i + p_u·q_i + noise)` on the 1..=5 scale.
//! Generation is deterministic for a seed, whatever the number of threads.

use rand::distr::Distribution;
use rand::distr::weighted::WeightedIndex;
use rand::{Rng, SeedableRng};
use rand_distr::{LogNormal, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use std::collections::HashSet;

use crate::data::{Dataset, Rating, RatingScale};
use crate::ids::{IdMap, RawId};
use crate::model::{Model, ModelMeta};
use crate::seen::SeenItems;
use crate::svd::{Hyperparams, SvdModel};

/// Size and seed of a synthetic data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntheticSpec {
    /// Number of users.
    pub users: usize,
    /// Number of items.
    pub items: usize,
    /// Number of ratings (at most half of all user-item pairs).
    pub ratings: usize,
    /// Seed; the same spec always gives the same data.
    pub seed: u64,
}

impl SyntheticSpec {
    /// The size of MovieLens 100K.
    pub const ML_100K: SyntheticSpec = SyntheticSpec {
        users: 943,
        items: 1682,
        ratings: 100_000,
        seed: 42,
    };
    /// The size of MovieLens 25M.
    pub const ML_25M: SyntheticSpec = SyntheticSpec {
        users: 162_000,
        items: 59_000,
        ratings: 25_000_000,
        seed: 42,
    };
}

const LATENT: usize = 8;

/// Generates the data set described by `spec`. Users are `"1".."users"`,
/// items `"1".."items"`, all dense indices in that order.
pub fn generate(spec: &SyntheticSpec) -> Dataset {
    let users = spec.users.max(1);
    let items = spec.items.max(1);
    let ratings = spec.ratings.min(users * items / 2).max(1);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(spec.seed);
    let item_truth = hidden_profiles(&mut rng, items, 0.5);
    let counts = activity(&mut rng, users, items, ratings);
    let popularity: Vec<f64> = (0..items)
        .map(|rank| 1.0 / (rank as f64 + 10.0).powf(0.9))
        .collect();
    // Popular items get popular by chance, not by index.
    let mut item_order: Vec<u32> = (0..items as u32).collect();
    rand::seq::SliceRandom::shuffle(&mut item_order[..], &mut rng);
    let picker = WeightedIndex::new(&popularity).ok();

    let per_user: Vec<Vec<Rating>> = (0..users)
        .into_par_iter()
        .map(|u| {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(
                spec.seed ^ (u as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            );
            let truth = hidden_profiles(&mut rng, 1, 0.4);
            let noise = Normal::new(0.0f32, 0.8).ok();
            let mut chosen = HashSet::with_capacity(counts[u]);
            let mut out = Vec::with_capacity(counts[u]);
            while out.len() < counts[u] {
                let item = match &picker {
                    Some(p) => item_order[p.sample(&mut rng)],
                    None => rng.random_range(0..items as u32),
                };
                if !chosen.insert(item) {
                    continue;
                }
                let i = item as usize;
                let q = &item_truth.factors[i * LATENT..(i + 1) * LATENT];
                let dot: f32 = truth.factors.iter().zip(q).map(|(a, b)| a * b).sum();
                let eps = noise.map_or(0.0, |n| n.sample(&mut rng));
                let value = (3.5 + truth.bias[0] + item_truth.bias[i] + dot + eps)
                    .round()
                    .clamp(1.0, 5.0);
                out.push(Rating {
                    user: u as u32,
                    item,
                    value,
                });
            }
            out
        })
        .collect();

    let mut data = Dataset {
        users: id_map(users),
        items: id_map(items),
        ratings: Vec::with_capacity(ratings),
        timestamps: Vec::new(),
    };
    for chunk in per_user {
        data.ratings.extend(chunk);
    }
    data
}

struct Profiles {
    bias: Vec<f32>,
    factors: Vec<f32>,
}

fn hidden_profiles(rng: &mut Xoshiro256PlusPlus, n: usize, bias_sd: f32) -> Profiles {
    let bias = Normal::new(0.0f32, bias_sd).ok();
    let factor = Normal::new(0.0f32, 0.45).ok();
    let mut draw = |d: Option<Normal<f32>>| d.map_or(0.0, |d| d.sample(rng));
    Profiles {
        bias: (0..n).map(|_| draw(bias)).collect(),
        factors: (0..n * LATENT).map(|_| draw(factor)).collect(),
    }
}

/// Ratings per user: heavy-tailed, at least `min(20, items / 2)` each, summing to `total`.
fn activity(rng: &mut Xoshiro256PlusPlus, users: usize, items: usize, total: usize) -> Vec<usize> {
    let cap = (items / 2).max(1);
    let floor = (total / users).min(20).min(cap).max(1);
    let spread = LogNormal::new(0.0f64, 1.0).ok();
    let weights: Vec<f64> = (0..users)
        .map(|_| spread.map_or(1.0, |d| d.sample(rng)))
        .collect();
    let sum: f64 = weights.iter().sum();
    let extra = total.saturating_sub(floor * users) as f64;
    let mut counts: Vec<usize> = weights
        .iter()
        .map(|w| (floor + (extra * w / sum) as usize).min(cap))
        .collect();
    // Rounding and capping leave the sum a little off; even it out across users.
    let mut assigned: usize = counts.iter().sum();
    let mut at = 0;
    while assigned != total && users > 0 {
        let c = &mut counts[at % users];
        if assigned < total && *c < cap {
            *c += 1;
            assigned += 1;
        } else if assigned > total && *c > floor {
            *c -= 1;
            assigned -= 1;
        }
        at += 1;
        if at > 4 * users * cap.max(1) {
            break;
        }
    }
    counts
}

/// A model with random parameters: `users` users who each rated `seen_per_user`
/// random items, over a catalogue of `items` items with `factors` factors.
/// For benchmarking the serving path at catalogue sizes we have no data for.
pub fn random_model(
    users: usize,
    items: usize,
    factors: usize,
    seen_per_user: usize,
    seed: u64,
) -> Model {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.1).ok();
    let mut draw = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| normal.map_or(0.0, |d| d.sample(&mut rng)))
            .collect()
    };
    let svd = SvdModel {
        n_factors: factors,
        global_mean: 3.5,
        scale: RatingScale::FIVE_STARS,
        user_bias: draw(users),
        item_bias: draw(items),
        user_factors: draw(users * factors),
        item_factors: draw(items * factors),
        user_counts: vec![seen_per_user.max(1) as u32; users],
        item_counts: vec![1; items],
    };
    let mut ratings = Vec::with_capacity(users * seen_per_user);
    for user in 0..users as u32 {
        for _ in 0..seen_per_user.min(items) {
            ratings.push(Rating {
                user,
                item: rng.random_range(0..items as u32),
                value: 4.0,
            });
        }
    }
    Model {
        meta: ModelMeta {
            created_unix: 0,
            params: Hyperparams {
                n_factors: factors,
                ..Hyperparams::with_seed(seed)
            },
            threads: 1,
            train_rmse: None,
            n_ratings: ratings.len() as u64,
            source: format!("random {users}x{items}x{factors}"),
            fit_seconds: 0.0,
            online: None,
            imported: None,
        },
        id: format!("random-{seed}"),
        users: id_map(users),
        items: id_map(items),
        titles: vec![String::new(); items],
        seen: SeenItems::from_ratings(users, &ratings),
        svd,
    }
}

fn id_map(n: usize) -> IdMap {
    let ids = (1..=n).map(|i| RawId::new(i.to_string())).collect();
    // Distinct by construction.
    IdMap::from_ordered(ids).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_exactly_the_requested_size_deterministically() {
        let spec = SyntheticSpec {
            users: 200,
            items: 300,
            ratings: 9_000,
            seed: 3,
        };
        let a = generate(&spec);
        assert_eq!(a.len(), 9_000);
        assert_eq!((a.users.len(), a.items.len()), (200, 300));
        let b = generate(&spec);
        assert_eq!(a.ratings, b.ratings);
        let c = generate(&SyntheticSpec { seed: 4, ..spec });
        assert_ne!(a.ratings, c.ratings);
    }

    #[test]
    fn ratings_look_like_movielens() {
        let data = generate(&SyntheticSpec {
            users: 500,
            items: 800,
            ratings: 40_000,
            seed: 1,
        });
        let mean = data.ratings.iter().map(|r| f64::from(r.value)).sum::<f64>() / data.len() as f64;
        assert!((3.0..4.0).contains(&mean), "mean {mean}");
        assert!(
            data.ratings
                .iter()
                .all(|r| (1.0..=5.0).contains(&r.value) && r.value.fract() == 0.0)
        );
        let mut pairs: Vec<(u32, u32)> = data.ratings.iter().map(|r| (r.user, r.item)).collect();
        pairs.sort_unstable();
        pairs.dedup();
        assert_eq!(pairs.len(), data.len(), "a user rates an item at most once");
        let mut per_user = vec![0; 500];
        for r in &data.ratings {
            per_user[r.user as usize] += 1;
        }
        assert!(
            per_user.iter().all(|&c| c >= 20),
            "every user has a minimum of ratings"
        );
    }
}
