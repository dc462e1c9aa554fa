//! A trained model with everything needed to serve it: what a model file holds.
//!
//! [`SvdModel`] is only numbers indexed by dense ids. A
//! servable [`Model`] adds the id maps back to raw ids, the titles, the items
//! each user has already rated (never recommended again), and metadata saying
//! how it was trained. [`Model::fit`] builds one from a data set; the
//! `modelfile` module reads and writes it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, ItemTitles, RatingScale};
use crate::ids::IdMap;
use crate::seen::SeenItems;
use crate::svd::train::first_out_of_scale;
use crate::svd::{EpochReport, Hyperparams, SvdModel, TrainError, TrainOptions, train};

/// How and from what a model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// Seconds since the Unix epoch when training finished.
    pub created_unix: u64,
    /// The hyper-parameters used.
    pub params: Hyperparams,
    /// Training threads (1 = sequential SGD).
    pub threads: usize,
    /// Training RMSE of the last epoch.
    pub train_rmse: Option<f64>,
    /// Number of training ratings.
    pub n_ratings: u64,
    /// Where the ratings came from (file name), for people reading `model info`.
    pub source: String,
    /// Wall time of the SGD epochs.
    pub fit_seconds: f64,
    /// For a snapshot of a model that kept learning online: what it includes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<OnlineState>,
    /// For a model trained elsewhere and imported: by what and from which
    /// file. Absent in models recstream trained itself (and in every file
    /// written before imports existed, which still load).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported: Option<ImportedFrom>,
}

/// Where an imported model was trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportedFrom {
    /// The library and its version, e.g. "scikit-surprise 1.1.5".
    pub library: String,
    /// The algorithm, e.g. "SVD".
    pub algorithm: String,
    /// The file it was imported from, as given on the command line.
    pub file: String,
    /// The training seed (surprise's `random_state`), when one was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_state: Option<i64>,
}

/// How far online learning had got when a model was snapshotted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OnlineState {
    /// Id of the batch model the updates were applied to.
    pub base_id: String,
    /// Sequence number of the last update included.
    pub seq: u64,
    /// Positions in the input streams that the snapshot includes, by name.
    /// Opaque to the core: the streaming layer stores where to resume here.
    pub positions: std::collections::BTreeMap<String, i64>,
    /// Anything else the streaming layer needs to resume (merged item
    /// states, hand-over positions), opaque to the core as well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<serde_json::Value>,
}

/// A servable model: factors, ids, titles, seen items and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    /// Training metadata.
    pub meta: ModelMeta,
    /// Short content hash identifying this model (set when saved or loaded).
    pub id: String,
    /// Raw user ids.
    pub users: IdMap,
    /// Raw item ids.
    pub items: IdMap,
    /// Title per dense item ("" when no item file was given).
    pub titles: Vec<String>,
    /// The learned parameters.
    pub svd: SvdModel,
    /// Items each user rated in the training data.
    pub seen: SeenItems,
}

/// What training a model needs besides the data.
#[derive(Debug, Clone)]
pub struct FitConfig<'a> {
    /// Hyper-parameters.
    pub params: Hyperparams,
    /// 1 for sequential SGD, more for blocked parallel SGD.
    pub threads: usize,
    /// Rating scale; the data's observed range when `None`. A rating outside
    /// it is an error ([`TrainError::RatingOutOfScale`]).
    pub scale: Option<RatingScale>,
    /// Titles by raw item id, if an item file was given.
    pub titles: Option<&'a ItemTitles>,
    /// Recorded in the metadata.
    pub source: String,
}

impl Model {
    /// Trains a model on a whole data set.
    pub fn fit(
        data: &Dataset,
        config: &FitConfig<'_>,
        on_epoch: &mut dyn FnMut(&EpochReport),
    ) -> Result<Model, TrainError> {
        let scale = config
            .scale
            .or_else(|| data.observed_scale())
            .ok_or(TrainError::NoRatings)?;
        // `train` checks this too, but can only name dense indices.
        scale.check().map_err(TrainError::InvalidScale)?;
        if let Some((index, r)) = first_out_of_scale(&data.ratings, scale) {
            let raw = |map: &IdMap, i: u32| {
                map.raw(i)
                    .map_or_else(|| i.to_string(), |id| id.to_string())
            };
            return Err(TrainError::RatingOutOfScale {
                position: index + 1,
                user: raw(&data.users, r.user),
                item: raw(&data.items, r.item),
                value: r.value,
                min: scale.min,
                max: scale.max,
            });
        }
        let started = Instant::now();
        let mut last_rmse = None;
        let svd = train(
            &data.ratings,
            data.users.len(),
            data.items.len(),
            &config.params,
            TrainOptions {
                threads: config.threads,
                scale,
            },
            &mut |report| {
                last_rmse = Some(report.train_rmse);
                on_epoch(report);
            },
        )?;
        let fit_seconds = started.elapsed().as_secs_f64();
        let titles = data
            .items
            .ids()
            .iter()
            .map(|id| {
                config
                    .titles
                    .and_then(|t| t.get(id.as_str()))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        Ok(Model {
            meta: ModelMeta {
                created_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                params: config.params.clone(),
                threads: config.threads,
                train_rmse: last_rmse,
                n_ratings: data.len() as u64,
                source: config.source.clone(),
                fit_seconds,
                online: None,
                imported: None,
            },
            id: String::from("unsaved"),
            seen: SeenItems::from_ratings(data.users.len(), &data.ratings),
            users: data.users.clone(),
            items: data.items.clone(),
            titles,
            svd,
        })
    }

    /// The version string replies carry: the batch model id, plus the
    /// sequence number of the last online update when there were any.
    pub fn version(&self) -> String {
        match &self.meta.online {
            Some(online) => format!("{}+{}", online.base_id, online.seq),
            None => self.id.clone(),
        }
    }

    /// The id of the batch model this one is or derives from.
    pub fn base_id(&self) -> &str {
        self.meta.online.as_ref().map_or(&self.id, |o| &o.base_id)
    }

    /// Checks that ids, titles, factors and seen items agree in size.
    pub fn check_consistency(&self) -> Result<(), String> {
        self.svd.check_shape()?;
        let (users, items) = (self.svd.n_users(), self.svd.n_items());
        if self.users.len() != users || self.items.len() != items {
            return Err(format!(
                "{} user ids and {} item ids for a model of {users} users and {items} items",
                self.users.len(),
                self.items.len()
            ));
        }
        if self.titles.len() != items {
            return Err(format!("{} titles for {items} items", self.titles.len()));
        }
        if self.seen.n_users() != users {
            return Err(format!(
                "seen items for {} users, expected {users}",
                self.seen.n_users()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_with(value: f32) -> Dataset {
        let mut data = Dataset::default();
        for u in 0..10 {
            for i in 0..8 {
                let r = 1.0 + ((u + i) % 5) as f32;
                data.push(&format!("u{u}"), &format!("m{i}"), r, None);
            }
        }
        data.push("u7", "m3", value, None);
        data
    }

    fn config(scale: Option<RatingScale>) -> FitConfig<'static> {
        FitConfig {
            params: Hyperparams {
                n_factors: 4,
                n_epochs: 3,
                ..Hyperparams::with_seed(1)
            },
            threads: 1,
            scale,
            titles: None,
            source: "test".into(),
        }
    }

    #[test]
    fn a_rating_outside_the_declared_scale_is_an_error_naming_it() {
        let data = data_with(1e6);
        let err = Model::fit(&data, &config(Some(RatingScale::FIVE_STARS)), &mut |_| {})
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rating 1000000 (user u7, item m3, rating #81 of the data) is outside the rating scale 1..=5"
        );
    }

    #[test]
    fn a_huge_rating_within_the_observed_scale_fails_as_divergence_not_nan() {
        let data = data_with(1e30);
        let err = Model::fit(&data, &config(None), &mut |_| {})
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().starts_with("training diverged"), "{err}");
    }
}
