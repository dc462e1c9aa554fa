//! What `recstream run` starts from: the model to serve and the broker to serve it on.
//!
//! The model is the user's file, or MovieLens 100K trained once and kept
//! under the data folder; on the embedded broker a snapshot that an earlier
//! run learnt on the same batch model is carried over, so learning survives
//! a restart. Each model file is read once. The broker is the user's, or
//! an embedded one started with every topic, tuned for its one thread.

use std::path::{Path, PathBuf};

use anyhow::Context;
use recstream_core::data::{ReadOptions, read_ratings, read_titles};
use recstream_core::{FitConfig, Hyperparams, Model, modelfile};
use recstream_datasets::FetchOptions;
use recstream_stream::embedded::EmbeddedBroker;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::learner;
use recstream_stream::topics::TopicSpec;

use super::RunArgs;

/// The model `run` starts from, loaded once.
pub(super) struct StartModel {
    /// Where it was read from (the batch model, or a carried-over snapshot).
    pub path: PathBuf,
    pub model: Model,
}

impl StartModel {
    /// The batch model (given, or MovieLens trained once), or the snapshot
    /// in `snapshot_dir` an earlier embedded run learnt on top of it.
    pub(super) fn resolve(args: &RunArgs, snapshot_dir: &Path) -> anyhow::Result<Self> {
        let batch = match &args.model {
            Some(path) => StartModel::load(path)?,
            None => movielens_model(&args.data_dir)?,
        };
        let carried = match args.brokers {
            Some(_) => None,
            None => carried_over_snapshot(snapshot_dir, &batch.model)?,
        };
        let start = carried.unwrap_or(batch);
        tracing::info!(model = %start.model.version(), users = start.model.users.len(), items = start.model.items.len(), "model loaded");
        Ok(start)
    }

    fn load(path: &Path) -> anyhow::Result<Self> {
        let model = modelfile::load(path)
            .with_context(|| format!("loading the model {}", path.display()))?;
        Ok(StartModel {
            path: path.to_path_buf(),
            model,
        })
    }
}

/// The snapshot an earlier run on the embedded broker left in `dir`, made
/// ready for a new, empty broker: its topic positions and the learner's
/// resume state (offsets on a broker that is gone) are dropped, so the learner and the worker start from the
/// learnt model and read the new topics from their beginning. `None` with no
/// snapshot, or one of another batch model than `batch` or that cannot be
/// read: that one is set aside (renamed), so the learner does not pick it up.
fn carried_over_snapshot(dir: &Path, batch: &Model) -> anyhow::Result<Option<StartModel>> {
    let Some(path) = learner::latest_snapshot(dir) else {
        return Ok(None);
    };
    let mut snapshot = match modelfile::load(&path) {
        Ok(snapshot) if snapshot.base_id() == batch.id => snapshot,
        outcome => {
            let aside = path.with_extension("rsm.old");
            let why = match outcome {
                Ok(other) => format!("it was learnt on another batch model ({})", other.base_id()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                "not starting from {} ({why}); moved to {}",
                path.display(),
                aside.display()
            );
            std::fs::rename(&path, &aside)
                .with_context(|| format!("moving {} aside", path.display()))?;
            return Ok(None);
        }
    };
    // Everything that names a place on the old broker goes: the input
    // positions, and the learner's per-partition logs (the last rating read
    // and the model-topic offsets). Kept, the learner would resume the new,
    // empty ratings topic at the old offsets and skip every rating below
    // them without a word.
    if let Some(online) = snapshot.meta.online.as_mut() {
        online.positions.clear();
        online.resume = None;
    }
    modelfile::save(&mut snapshot, &path)
        .with_context(|| format!("rewriting {}", path.display()))?;
    eprintln!(
        "starting from what an earlier run learnt: {} ({})",
        path.display(),
        snapshot.version()
    );
    Ok(Some(StartModel {
        path,
        model: snapshot,
    }))
}

/// Fetches MovieLens 100K and trains the model once; later runs reuse it.
fn movielens_model(data_dir: &Path) -> anyhow::Result<StartModel> {
    let path = data_dir.join("ml-100k.rsm");
    if path.is_file()
        && let Ok(model) = modelfile::load(&path)
    {
        return Ok(StartModel { path, model });
    }
    let fetched = super::super::data::fetch_ml100k_verbose(&FetchOptions::new(data_dir), false)?;
    eprintln!(
        "training a model on {} (first run only)",
        fetched.ratings.display()
    );
    let (data, _) = read_ratings(&fetched.ratings, ReadOptions::default())
        .with_context(|| format!("reading {}", fetched.ratings.display()))?;
    let titles = read_titles(&fetched.items)
        .with_context(|| format!("reading {}", fetched.items.display()))?;
    let config = FitConfig {
        params: Hyperparams::with_seed(1),
        threads: 1,
        scale: None,
        titles: Some(&titles),
        source: fetched
            .ratings
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    let mut model = Model::fit(&data, &config, &mut |_| {}).context("training")?;
    modelfile::save(&mut model, &path).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("model {} saved to {}", model.id, path.display());
    Ok(StartModel { path, model })
}

/// The broker `run` serves on, and the client settings for it.
pub(super) struct Broker {
    /// Kept alive until `run` ends; `None` on the user's brokers.
    embedded: Option<EmbeddedBroker>,
    /// `bootstrap.servers`.
    pub address: String,
    /// Settings every client of `run` uses.
    pub settings: KafkaSettings,
}

impl Broker {
    /// The user's brokers, or an embedded one started with `topics`.
    pub(super) fn start(args: &RunArgs, topics: &[TopicSpec]) -> anyhow::Result<Self> {
        let Some(address) = &args.brokers else {
            let embedded = EmbeddedBroker::start(topics).context("starting the embedded broker")?;
            let address = embedded.bootstrap_servers().to_string();
            let settings = args.properties.settings(&address);
            return Ok(Broker {
                embedded: Some(embedded),
                address,
                settings,
            });
        };
        Ok(Broker {
            embedded: None,
            address: address.clone(),
            settings: args.properties.settings(address),
        })
    }

    pub(super) fn is_embedded(&self) -> bool {
        self.embedded.is_some()
    }
}
