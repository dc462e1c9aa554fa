//! A trained model with everything needed to serve it: what a model file holds.
//!
//! [`SvdModel`](crate::svd::SvdModel) is only numbers indexed by dense ids. A
//! servable [`Model`] adds the id maps back to raw ids, the titles, the items
//! each user has already rated (never recommended again), and metadata saying
//! how it was trained. [`Model::fit`] builds one from a data set; the
//! `modelfile` module reads and writes it.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, ItemTitles, RatingScale};
use crate::ids::IdMap;
use crate::seen::SeenItems;
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
    /// Rating scale; the data's observed range when `None`.
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
