//! `recstream model info`, `import`, `export` and `publish`: inspect a model
//! file, convert it from and to a scikit-surprise `.npz`, or roll it out to
//! running workers. The conversions live in `recstream_core::surprise`.

use crate::output::out;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Subcommand};
use recstream_core::data::read_titles;
use recstream_core::{modelfile, surprise};

/// Model file commands.
#[derive(Debug, Args)]
pub struct ModelArgs {
    #[command(subcommand)]
    command: ModelCommand,
}

#[derive(Debug, Subcommand)]
enum ModelCommand {
    /// Verify a model file and print its metadata.
    Info {
        /// The model file.
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Turn a scikit-surprise SVD exported by python/recstream_surprise.py into a model file.
    Import {
        /// The .npz written by recstream_surprise.export(algo, trainset, path).
        #[arg(long, value_name = "NPZ")]
        surprise: PathBuf,
        /// Item file with titles (u.item, movies.dat, movies.csv or RecBole .item); overrides titles in the .npz.
        #[arg(long)]
        items: Option<PathBuf>,
        /// Where to write the model file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a model file's parameters, ids and seen items as an .npz for numpy (the import format).
    Export {
        /// The model file.
        model: PathBuf,
        /// Where to write the .npz (read it with numpy.load or recstream_surprise.load).
        #[arg(long)]
        npz: PathBuf,
    },
    /// Roll a batch model out to every worker following the model topic, without restarting them.
    Publish(PublishArgs),
}

/// Arguments of `recstream model publish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The model file.
    pub model: PathBuf,

    #[command(flatten)]
    pub kafka: crate::args::KafkaArgs,

    #[command(flatten)]
    pub topics: PublishTopics,
}

/// Where published models go.
#[derive(Debug, Clone, Args)]
pub struct PublishTopics {
    /// Model topic the workers follow (the announcement goes there).
    #[arg(long, default_value = "model-updates")]
    pub model_topic: String,

    /// Topic the model file travels on, in chunks.
    #[arg(long, default_value = super::serve::DEFAULT_FILES_TOPIC)]
    pub files_topic: String,

    /// Create the two topics first if missing (without it a missing topic is an error).
    #[arg(long)]
    pub create_topics: bool,
}

/// Publishes a model file; used by `model publish` and `train --publish`.
pub fn publish(
    path: &std::path::Path,
    settings: &recstream_stream::kafka::KafkaSettings,
    topics: &PublishTopics,
    covers: Option<recstream_stream::model_topic::Covers>,
) -> anyhow::Result<()> {
    crate::args::runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        publish_async(path, settings, topics, covers, &shutdown).await?;
        Ok(())
    })
}

/// Publishes a model file from async code (`retrain`); returns its announcement.
pub async fn publish_async(
    path: &std::path::Path,
    settings: &recstream_stream::kafka::KafkaSettings,
    topics: &PublishTopics,
    covers: Option<recstream_stream::model_topic::Covers>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<recstream_stream::model_topic::ModelAnnouncement> {
    // Created with the ratings topics' default partition count, if missing.
    let needed = super::serve::model_topics(&topics.model_topic, 4, &topics.files_topic);
    recstream_stream::topics::prepare(settings, &needed, topics.create_topics, shutdown)
        .await
        .context("checking the model topics")?;
    let announcement = recstream_stream::publish::publish_model(
        settings,
        &topics.files_topic,
        &topics.model_topic,
        path,
        covers,
    )
    .await
    .with_context(|| format!("publishing {}", path.display()))?;
    out!(
        "published model {} ({} bytes in {} chunk(s) on {}); workers following {} will switch to it",
        announcement.id,
        announcement.bytes,
        announcement.chunks,
        announcement.files_topic,
        topics.model_topic
    );
    Ok(announcement)
}

/// Runs a model command.
pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    let (path, json) = match args.command {
        ModelCommand::Info { model, json } => (model, json),
        ModelCommand::Import {
            surprise,
            items,
            out,
        } => return import(&surprise, items.as_deref(), &out),
        ModelCommand::Export { model, npz } => return export(&model, &npz),
        ModelCommand::Publish(publish_args) => {
            return publish(
                &publish_args.model,
                &publish_args.kafka.settings(),
                &publish_args.topics,
                None,
            );
        }
    };
    let model = modelfile::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let info = serde_json::json!({
        "model_id": model.id,
        "model_version": model.version(),
        "users": model.users.len(),
        "items": model.items.len(),
        "seen_pairs": model.seen.len(),
        "n_factors": model.svd.n_factors,
        "global_mean": model.svd.global_mean,
        "rating_scale": [model.svd.scale.min, model.svd.scale.max],
        "titles": model.titles.iter().filter(|t| !t.is_empty()).count(),
        "meta": model.meta,
    });
    if json {
        out!("{info}");
    } else {
        out!(
            "{}: model {} (format version {}), checksum OK",
            path.display(),
            model.id,
            modelfile::FORMAT_VERSION
        );
        out!(
            "  {} users, {} items, {} factors, {} titles",
            model.users.len(),
            model.items.len(),
            model.svd.n_factors,
            info["titles"]
        );
        if let Some(from) = &model.meta.imported {
            let p = &model.meta.params;
            out!(
                "  imported from {} {} {:?}: n_factors {}, n_epochs {}, biased {}, random_state {}, {} training ratings",
                from.library,
                from.algorithm,
                from.file,
                p.n_factors,
                p.n_epochs,
                p.biased,
                from.random_state
                    .map_or_else(|| "None".to_string(), |s| s.to_string()),
                model.meta.n_ratings
            );
        } else {
            out!(
                "  trained on {} ratings from {:?}, seed {}, {} thread(s), {:.3} s, train RMSE {:.4}",
                model.meta.n_ratings,
                model.meta.source,
                model.meta.params.seed,
                model.meta.threads,
                model.meta.fit_seconds,
                model.meta.train_rmse.unwrap_or(f64::NAN)
            );
        }
        out!(
            "  hyper-parameters: {}",
            serde_json::to_string(&model.meta.params)?
        );
    }
    Ok(())
}

/// `model import --surprise`: reads the .npz, saves the model, says what it holds.
fn import(npz: &Path, items: Option<&Path>, out: &Path) -> anyhow::Result<()> {
    let titles = items
        .map(|path| {
            read_titles(path).with_context(|| format!("reading titles from {}", path.display()))
        })
        .transpose()?;
    let imported = surprise::import(npz, titles.as_ref())
        .with_context(|| format!("importing {}", npz.display()))?;
    for warning in &imported.warnings {
        eprintln!("warning: {warning}");
    }
    let mut model = imported.model;
    modelfile::save(&mut model, out).with_context(|| format!("writing {}", out.display()))?;
    out!(
        "imported {} ({} users, {} items, {} factors) into {}: model {}",
        npz.display(),
        model.users.len(),
        model.items.len(),
        model.svd.n_factors,
        out.display(),
        model.id
    );
    Ok(())
}

/// `model export --npz`: the model file's arrays in the import format.
fn export(model_path: &Path, npz: &Path) -> anyhow::Result<()> {
    let model =
        modelfile::load(model_path).with_context(|| format!("loading {}", model_path.display()))?;
    surprise::export(&model, npz).with_context(|| format!("exporting to {}", npz.display()))?;
    out!(
        "exported model {} ({} users, {} items, {} factors) to {}",
        model.id,
        model.users.len(),
        model.items.len(),
        model.svd.n_factors,
        npz.display()
    );
    Ok(())
}
