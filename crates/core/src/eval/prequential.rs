//! Prequential evaluation: does learning online beat a frozen model on what comes next?
//!
//! The ratings are replayed in timestamp order. A model is trained on the
//! first part of the timeline; on the rest, every rating is first predicted
//! (and the user's top 10 checked for the rated item), and only then, for the
//! online learner, learnt from. The frozen model never learns. Both are
//! scored on exactly the same ratings, so the difference is what online
//! learning buys.

use serde::Serialize;

use crate::data::Dataset;
use crate::model::{FitConfig, Model};
use crate::online::{OnlineLearner, PrequentialStats};
use crate::svd::TrainError;

/// Running accuracy of one contender.
#[derive(Debug, Clone, Serialize)]
pub struct ContenderReport {
    /// RMSE of the predictions made before each rating was learnt.
    pub rmse: f64,
    /// Fraction of ratings (of users known at the time) whose item was in
    /// the user's top 10 just before.
    pub hit_rate_at_10: f64,
    /// Ratings scored.
    pub ratings: u64,
}

/// Frozen against online, on the same replay.
#[derive(Debug, Clone, Serialize)]
pub struct PrequentialReport {
    /// Ratings the model was trained on (the first part of the timeline).
    pub train_ratings: usize,
    /// Ratings replayed after that.
    pub replayed_ratings: usize,
    /// The batch model, never updated.
    pub frozen: ContenderReport,
    /// The same model, learning from each rating after scoring it.
    pub online: ContenderReport,
    /// Seconds the online learner spent learning, per rating.
    pub online_seconds_per_rating: f64,
    /// Both contenders over [`WINDOWS`] consecutive slices of the replay,
    /// oldest first: where along the timeline online learning pulls ahead,
    /// which the totals hide (`bench/plot.py` draws it).
    pub windows: Vec<WindowReport>,
}

/// Slices of the replay that [`PrequentialReport::windows`] reports.
pub const WINDOWS: usize = 25;

/// Accuracy within one slice of the replay (not running totals).
#[derive(Debug, Clone, Serialize)]
pub struct WindowReport {
    /// Ratings replayed up to the end of this slice.
    pub replayed: usize,
    /// The frozen model on this slice.
    pub frozen: ContenderReport,
    /// The online learner on this slice.
    pub online: ContenderReport,
}

/// Why the evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum PrequentialError {
    /// The data has no timestamps to order it by.
    #[error("the ratings have no timestamps; prequential evaluation replays them in time order")]
    NoTimestamps,
    /// Training the initial model failed.
    #[error(transparent)]
    Train(#[from] TrainError),
}

/// A timeline cut in two: the batch model trained on the past, and the
/// ratings that come after it, in time order.
#[derive(Debug, Clone)]
pub struct Timeline {
    /// Trained on the first part of the timeline only.
    pub model: Model,
    /// Ratings the model was trained on.
    pub train_ratings: usize,
    /// The rest, oldest first: (raw user, raw item, rating).
    pub future: Vec<(String, String, f32)>,
}

impl Timeline {
    /// Trains on the first `split` of `data`'s timeline and keeps the rest.
    pub fn cut(
        data: &Dataset,
        split: f64,
        config: &FitConfig<'_>,
    ) -> Result<Self, PrequentialError> {
        if !data.has_timestamps() {
            return Err(PrequentialError::NoTimestamps);
        }
        let mut order: Vec<usize> = (0..data.len()).collect();
        order.sort_by_key(|&i| (data.timestamps[i], i));
        let cut = ((data.len() as f64) * split.clamp(0.0, 1.0)).round() as usize;
        let (past, future) = order.split_at(cut.min(order.len()));

        // The batch model knows only the past: its own id maps, built in time order.
        let mut history = Dataset::default();
        for &i in past {
            let r = data.ratings[i];
            let (u, it) = (raw(data, r.user, true), raw(data, r.item, false));
            history.push(u, it, r.value, Some(data.timestamps[i]));
        }
        let mut model = Model::fit(&history, config, &mut |_| {})?;
        model.id = "prequential".into();
        let future = future
            .iter()
            .map(|&i| {
                let r = data.ratings[i];
                let (u, it) = (raw(data, r.user, true), raw(data, r.item, false));
                (u.to_string(), it.to_string(), r.value)
            })
            .collect();
        Ok(Timeline {
            model,
            train_ratings: past.len(),
            future,
        })
    }
}

/// Trains on the first `split` of the timeline and replays the rest.
pub fn prequential(
    data: &Dataset,
    split: f64,
    config: &FitConfig<'_>,
    update_items: bool,
) -> Result<PrequentialReport, PrequentialError> {
    let timeline = Timeline::cut(data, split, config)?;
    let frozen = crate::recommend::Recommender::new(timeline.model.clone());
    let mut online = OnlineLearner::new(timeline.model, update_items);
    let (mut frozen_stats, mut online_stats) =
        (PrequentialStats::default(), PrequentialStats::default());
    let mut scratch = crate::recommend::Scratch::default();
    let mut learning = std::time::Duration::ZERO;
    let slice = timeline.future.len().div_ceil(WINDOWS).max(1);
    let mut windows = Vec::with_capacity(WINDOWS);
    let (mut frozen_window, mut online_window) =
        (PrequentialStats::default(), PrequentialStats::default());
    for (replayed, (uid, iid, value)) in (1..).zip(&timeline.future) {
        let frozen_model = frozen.model();
        let user = frozen_model
            .users
            .get(uid)
            .filter(|&u| frozen_model.svd.knows_user(u));
        let predicted = frozen_model.svd.predict(user, frozen_model.items.get(iid));
        let hit = user.map(|_| {
            frozen
                .recommend_with(uid, 10, &mut scratch)
                .recommendations
                .iter()
                .any(|x| x.iid.as_str() == iid)
        });
        let scored = crate::online::Prequential {
            predicted,
            actual: *value,
            hit_at_10: hit,
        };
        frozen_stats.record(&scored);
        frozen_window.record(&scored);
        let t = std::time::Instant::now();
        if let Ok((_, p)) = online.learn(uid, iid, *value) {
            online_stats.record(&p);
            online_window.record(&p);
        }
        learning += t.elapsed();
        if replayed % slice == 0 || replayed == timeline.future.len() {
            windows.push(WindowReport {
                replayed,
                frozen: ContenderReport::of(&std::mem::take(&mut frozen_window)),
                online: ContenderReport::of(&std::mem::take(&mut online_window)),
            });
        }
    }
    let replayed = timeline.future.len();
    Ok(PrequentialReport {
        train_ratings: timeline.train_ratings,
        replayed_ratings: replayed,
        frozen: ContenderReport::of(&frozen_stats),
        online: ContenderReport::of(&online_stats),
        online_seconds_per_rating: learning.as_secs_f64() / replayed.max(1) as f64,
        windows,
    })
}

impl ContenderReport {
    /// The report of running accuracy `stats`.
    pub fn of(stats: &PrequentialStats) -> Self {
        ContenderReport {
            rmse: stats.rmse(),
            hit_rate_at_10: stats.hit_rate(),
            ratings: stats.count,
        }
    }
}

fn raw(data: &Dataset, index: u32, user: bool) -> &str {
    let map = if user { &data.users } else { &data.items };
    map.raw(index).map_or("", |id| id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::Hyperparams;
    use crate::synth::{SyntheticSpec, generate};

    #[test]
    fn online_learning_beats_a_frozen_model_on_a_drifting_replay() {
        let mut data = generate(&SyntheticSpec {
            users: 300,
            items: 200,
            ratings: 20_000,
            seed: 5,
        });
        // Time order: users arrive over time, so the frozen model meets
        // many it never saw; the learner gets to know them.
        data.timestamps = data
            .ratings
            .iter()
            .enumerate()
            .map(|(i, r)| i64::from(r.user) * 1000 + i as i64 % 1000)
            .collect();
        let config = FitConfig {
            params: Hyperparams {
                n_factors: 10,
                n_epochs: 10,
                ..Hyperparams::with_seed(1)
            },
            threads: 1,
            scale: None,
            titles: None,
            source: "synthetic".into(),
        };
        let report = prequential(&data, 0.5, &config, true).unwrap();
        assert_eq!(report.train_ratings + report.replayed_ratings, data.len());
        assert_eq!(report.frozen.ratings, report.online.ratings);
        assert!(report.online.rmse < report.frozen.rmse, "{report:?}");
        // The windows slice the same replay: together they are the totals.
        assert_eq!(report.windows.len(), WINDOWS);
        assert_eq!(
            report.windows.last().map(|w| w.replayed),
            Some(report.replayed_ratings)
        );
        let scored = |f: fn(&WindowReport) -> u64| report.windows.iter().map(f).sum::<u64>();
        assert_eq!(scored(|w| w.frozen.ratings), report.frozen.ratings);
        assert_eq!(scored(|w| w.online.ratings), report.online.ratings);
    }

    #[test]
    fn data_without_timestamps_is_refused() {
        let mut data = Dataset::default();
        data.push("1", "2", 3.0, None);
        let config = FitConfig {
            params: Hyperparams::default(),
            threads: 1,
            scale: None,
            titles: None,
            source: String::new(),
        };
        assert!(matches!(
            prequential(&data, 0.5, &config, true),
            Err(PrequentialError::NoTimestamps)
        ));
    }
}
