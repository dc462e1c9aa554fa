//! Offline evaluation: k-fold cross-validation and train/test scoring.
//!
//! Mirrors surprise's `cross_validate`: per fold, fit on the other folds,
//! predict every held-out rating (users or items unseen in training fall back
//! to the biases they have) and report RMSE, MAE, fit and test time. On top,
//! each fold is scored as a recommender with precision@k, recall@k and NDCG@k
//! (see [`metrics`]), over the users the model knows that have at least one
//! relevant held-out rating.

pub mod metrics;
pub mod prequential;
pub mod scale_out;
pub mod split;

use std::collections::HashMap;
use std::time::Instant;

use rayon::prelude::*;
use serde::Serialize;

use crate::data::{Dataset, Rating, RatingScale};
use crate::seen::SeenItems;
use crate::svd::{Hyperparams, SvdModel, TrainError, TrainOptions, train};
use crate::topn::{ItemIndex, Scored, select_top_n};

/// How to evaluate.
#[derive(Debug, Clone)]
pub struct EvalConfig {
    /// Hyper-parameters of the model under test.
    pub params: Hyperparams,
    /// Training threads.
    pub threads: usize,
    /// Rating scale (estimates are clipped to it).
    pub scale: RatingScale,
    /// Length of the ranked lists.
    pub k: usize,
    /// A held-out rating at or above this is relevant.
    pub relevance_threshold: f32,
}

/// Results of one train/test split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FoldReport {
    /// Root mean squared error on the test ratings.
    pub rmse: f64,
    /// Mean absolute error on the test ratings.
    pub mae: f64,
    /// Seconds to fit the model.
    pub fit_seconds: f64,
    /// Seconds to predict every test rating.
    pub test_seconds: f64,
    /// Mean precision@k.
    pub precision_at_k: f64,
    /// Mean recall@k.
    pub recall_at_k: f64,
    /// Mean NDCG@k.
    pub ndcg_at_k: f64,
    /// The k of the ranking metrics.
    pub k: usize,
    /// Training ratings.
    pub n_train: usize,
    /// Test ratings.
    pub n_test: usize,
    /// Users the ranking metrics averaged over.
    pub ranked_users: usize,
}

/// Cross-validation results: each fold and the means.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CvReport {
    /// Mean RMSE.
    pub rmse: f64,
    /// Mean MAE.
    pub mae: f64,
    /// Mean fit time.
    pub fit_seconds: f64,
    /// Mean test time.
    pub test_seconds: f64,
    /// Mean precision@k.
    pub precision_at_k: f64,
    /// Mean recall@k.
    pub recall_at_k: f64,
    /// Mean NDCG@k.
    pub ndcg_at_k: f64,
    /// The k of the ranking metrics.
    pub k: usize,
    /// Seed of the fold split.
    pub seed: u64,
    /// Per-fold results.
    pub folds: Vec<FoldReport>,
}

/// A held-out rating; `None` marks a user or item unknown to the training data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TestRating {
    /// Dense user index in the training maps.
    pub user: Option<u32>,
    /// Dense item index in the training maps.
    pub item: Option<u32>,
    /// The actual rating.
    pub value: f32,
}

/// K-fold cross-validation of `data`.
pub fn cross_validate(
    data: &Dataset,
    folds: usize,
    seed: u64,
    config: &EvalConfig,
    on_fold: &mut dyn FnMut(usize, &FoldReport),
) -> Result<CvReport, TrainError> {
    let splits = split::kfold(data.len(), folds, seed);
    let mut in_test = vec![usize::MAX; data.len()];
    for (f, test) in splits.iter().enumerate() {
        for &i in test {
            in_test[i] = f;
        }
    }
    let mut reports = Vec::with_capacity(splits.len());
    for (f, test_idx) in splits.iter().enumerate() {
        let train_set: Vec<Rating> = data
            .ratings
            .iter()
            .zip(&in_test)
            .filter(|(_, t)| **t != f)
            .map(|(r, _)| *r)
            .collect();
        let test_set: Vec<TestRating> = test_idx
            .iter()
            .map(|&i| {
                let r = data.ratings[i];
                TestRating {
                    user: Some(r.user),
                    item: Some(r.item),
                    value: r.value,
                }
            })
            .collect();
        let report = evaluate_split(
            &train_set,
            &test_set,
            data.users.len(),
            data.items.len(),
            config,
        )?;
        on_fold(f, &report);
        reports.push(report);
    }
    let mean = |get: fn(&FoldReport) -> f64| {
        reports.iter().map(get).sum::<f64>() / reports.len().max(1) as f64
    };
    Ok(CvReport {
        rmse: mean(|r| r.rmse),
        mae: mean(|r| r.mae),
        fit_seconds: mean(|r| r.fit_seconds),
        test_seconds: mean(|r| r.test_seconds),
        precision_at_k: mean(|r| r.precision_at_k),
        recall_at_k: mean(|r| r.recall_at_k),
        ndcg_at_k: mean(|r| r.ndcg_at_k),
        k: config.k,
        seed,
        folds: reports,
    })
}

/// Trains on `train` and evaluates on `test` (indices into the training maps).
pub fn evaluate_split(
    train_set: &[Rating],
    test_set: &[TestRating],
    n_users: usize,
    n_items: usize,
    config: &EvalConfig,
) -> Result<FoldReport, TrainError> {
    let started = Instant::now();
    let options = TrainOptions {
        threads: config.threads,
        scale: config.scale,
    };
    let model = train(
        train_set,
        n_users,
        n_items,
        &config.params,
        options,
        &mut |_| {},
    )?;
    let fit_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let pairs: Vec<(f32, f32)> = test_set
        .iter()
        .map(|t| (model.predict(t.user, t.item), t.value))
        .collect();
    let test_seconds = started.elapsed().as_secs_f64();

    let seen = SeenItems::from_ratings(n_users, train_set);
    let ranking = rank_held_out(&model, &seen, test_set, config);
    Ok(FoldReport {
        rmse: metrics::rmse(&pairs),
        mae: metrics::mae(&pairs),
        fit_seconds,
        test_seconds,
        precision_at_k: ranking.0.precision,
        recall_at_k: ranking.0.recall,
        ndcg_at_k: ranking.0.ndcg,
        k: config.k,
        n_train: train_set.len(),
        n_test: test_set.len(),
        ranked_users: ranking.1,
    })
}

/// Mean ranking scores over eligible users, and how many users that was.
fn rank_held_out(
    model: &SvdModel,
    seen: &SeenItems,
    test_set: &[TestRating],
    config: &EvalConfig,
) -> (metrics::RankingScores, usize) {
    let mut relevant: HashMap<u32, Vec<u32>> = HashMap::new();
    for t in test_set
        .iter()
        .filter(|t| t.value >= config.relevance_threshold)
    {
        if let (Some(u), Some(i)) = (t.user, t.item)
            && model.knows_user(u)
        {
            relevant.entry(u).or_default().push(i);
        }
    }
    let users: Vec<(u32, Vec<u32>)> = relevant.into_iter().collect();
    if users.is_empty() || config.k == 0 {
        return (metrics::RankingScores::default(), 0);
    }
    let index = ItemIndex::build(model);
    let totals = users
        .par_iter()
        .map_init(
            || (Vec::<f32>::new(), Vec::<Scored>::new()),
            |(scores, best), (u, items)| {
                index.score_into(model.user_row(*u), scores);
                select_top_n(scores, config.k, &[seen.base_row(*u)], best);
                let ranked: Vec<u32> = best.iter().map(|s| s.item).collect();
                metrics::ranking_scores(&ranked, items, config.k)
            },
        )
        .reduce(metrics::RankingScores::default, |a, b| {
            metrics::RankingScores {
                precision: a.precision + b.precision,
                recall: a.recall + b.recall,
                ndcg: a.ndcg + b.ndcg,
            }
        });
    let n = users.len() as f64;
    (
        metrics::RankingScores {
            precision: totals.precision / n,
            recall: totals.recall / n,
            ndcg: totals.ndcg / n,
        },
        users.len(),
    )
}

/// Maps a test data set into the id space of a training data set.
pub fn align_test_set(train_data: &Dataset, test_data: &Dataset) -> Vec<TestRating> {
    let map = |from: &crate::ids::IdMap, to: &crate::ids::IdMap, index: u32| {
        from.raw(index).and_then(|raw| to.get(raw.as_str()))
    };
    test_data
        .ratings
        .iter()
        .map(|r| TestRating {
            user: map(&test_data.users, &train_data.users, r.user),
            item: map(&test_data.items, &train_data.items, r.item),
            value: r.value,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SyntheticSpec, generate};

    fn config() -> EvalConfig {
        EvalConfig {
            params: Hyperparams {
                n_factors: 20,
                n_epochs: 15,
                ..Hyperparams::with_seed(5)
            },
            threads: 1,
            scale: RatingScale::FIVE_STARS,
            k: 10,
            relevance_threshold: 4.0,
        }
    }

    #[test]
    fn cross_validation_beats_the_global_mean_on_structured_data() {
        let data = generate(&SyntheticSpec {
            users: 400,
            items: 300,
            ratings: 30_000,
            seed: 9,
        });
        let mut seen_folds = 0;
        let report = cross_validate(&data, 3, 1, &config(), &mut |_, _| seen_folds += 1).unwrap();
        assert_eq!(seen_folds, 3);
        assert_eq!(report.folds.len(), 3);
        assert_eq!(report.folds.iter().map(|f| f.n_test).sum::<usize>(), 30_000);
        let mean = data.ratings.iter().map(|r| f64::from(r.value)).sum::<f64>() / data.len() as f64;
        let baseline = (data
            .ratings
            .iter()
            .map(|r| (f64::from(r.value) - mean).powi(2))
            .sum::<f64>()
            / data.len() as f64)
            .sqrt();
        assert!(
            report.rmse < baseline - 0.05,
            "rmse {} vs mean-only {baseline}",
            report.rmse
        );
        assert!(report.mae < report.rmse);
        assert!(report.precision_at_k > 0.0 && report.ndcg_at_k > 0.0 && report.recall_at_k > 0.0);
        assert!(report.folds.iter().all(|f| f.ranked_users > 0));
    }

    #[test]
    fn unknown_test_ids_fall_back_instead_of_failing() {
        let mut train_data = Dataset::default();
        train_data.push("1", "a", 4.0, None);
        train_data.push("2", "b", 2.0, None);
        let mut test_data = Dataset::default();
        test_data.push("1", "zzz", 3.0, None);
        test_data.push("new", "a", 5.0, None);
        let test = align_test_set(&train_data, &test_data);
        assert_eq!(test[0].user, Some(0));
        assert_eq!(test[0].item, None);
        assert_eq!(test[1].user, None);
        let report = evaluate_split(&train_data.ratings, &test, 2, 2, &config()).unwrap();
        assert_eq!(report.n_test, 2);
        assert!(report.rmse.is_finite());
    }
}
