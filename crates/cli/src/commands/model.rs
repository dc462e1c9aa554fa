//! `recstream model info` and `model publish`: inspect a model file, or roll it out to running workers.

use crate::output::out;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use recstream_core::modelfile;

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
        out!(
            "  trained on {} ratings from {:?}, seed {}, {} thread(s), {:.3} s, train RMSE {:.4}",
            model.meta.n_ratings,
            model.meta.source,
            model.meta.params.seed,
            model.meta.threads,
            model.meta.fit_seconds,
            model.meta.train_rmse.unwrap_or(f64::NAN)
        );
        out!(
            "  hyper-parameters: {}",
            serde_json::to_string(&model.meta.params)?
        );
    }
    Ok(())
}
