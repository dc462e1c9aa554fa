//! `recstream train`: fit a model on a ratings file and write it as a `.rsm` file
//! (the fitting is shared with `retrain`, which adds the ratings topic's ratings).

use crate::output::out;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use recstream_core::data::read_titles;
use recstream_core::{Dataset, FitConfig, Model, RatingScale, modelfile};

use crate::args::{HyperparamArgs, RatingsFormatArgs};
use crate::progress::Progress;

/// Arguments of `recstream train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub fit: FitArgs,

    /// Also publish the model to running workers (needs --brokers).
    #[arg(long, requires = "brokers")]
    pub publish: bool,

    /// Kafka brokers for --publish.
    #[arg(long, env = "RECSTREAM_BROKERS")]
    pub brokers: Option<String>,

    #[command(flatten)]
    pub kafka: crate::args::KafkaProperties,

    #[command(flatten)]
    pub publish_topics: super::model::PublishTopics,
}

/// What a batch model is trained on, how, and where it goes: shared by
/// `train` and `retrain`.
#[derive(Debug, Clone, Args)]
pub struct FitArgs {
    /// Ratings file (u.data, ratings.dat, ratings.csv or RecBole .inter).
    #[arg(long)]
    pub ratings: PathBuf,

    /// Item file with titles (u.item, movies.dat, movies.csv or RecBole .item).
    #[arg(long)]
    pub items: Option<PathBuf>,

    /// Where to write the model.
    #[arg(long, default_value = "model.rsm")]
    pub out: PathBuf,

    /// No progress bar and no summary.
    #[arg(long, short)]
    pub quiet: bool,

    #[command(flatten)]
    pub input: RatingsFormatArgs,

    #[command(flatten)]
    pub hyper: HyperparamArgs,
}

/// Trains and saves a model on the ratings file; returns it (with its id).
pub fn train_model(args: &FitArgs) -> anyhow::Result<Model> {
    train_model_with(args, |_, _| String::new())
}

/// Trains and saves a model on the ratings file plus what `more` adds to
/// it: `more` gets the ratings and their scale (the file's), and returns
/// what it added, for the model's recorded source.
pub fn train_model_with(
    args: &FitArgs,
    more: impl FnOnce(&mut Dataset, &RatingScale) -> String,
) -> anyhow::Result<Model> {
    let started = std::time::Instant::now();
    let mut data = args.input.read(&args.ratings, args.quiet)?;
    tracing::debug!(elapsed = ?started.elapsed(), "ratings read");
    let titles = match &args.items {
        Some(path) => Some(
            read_titles(path).with_context(|| format!("reading titles from {}", path.display()))?,
        ),
        None => None,
    };
    let params = args.hyper.params();
    let scale = args.hyper.scale(&data);
    let file = args
        .ratings
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let added = more(&mut data, &scale);
    let config = FitConfig {
        params: params.clone(),
        threads: args.hyper.threads,
        scale: Some(scale),
        titles: titles.as_ref(),
        source: if added.is_empty() {
            file
        } else {
            format!("{file} + {added}")
        },
    };
    tracing::debug!(elapsed = ?started.elapsed(), "titles read");
    let progress = Progress::steps(params.n_epochs as u64, "epoch", args.quiet);
    let mut model =
        Model::fit(&data, &config, &mut |report| progress.epoch(report)).context("training")?;
    progress.finish();
    tracing::debug!(elapsed = ?started.elapsed(), fit = model.meta.fit_seconds, "model fitted");
    drop(data);
    modelfile::save(&mut model, &args.out)
        .with_context(|| format!("writing the model to {}", args.out.display()))?;
    tracing::debug!(elapsed = ?started.elapsed(), "model saved");
    if !args.quiet {
        let size = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
        eprintln!(
            "trained {} factors x {} epochs (seed {}, {} thread{}) in {:.3} s, train RMSE {:.4}",
            params.n_factors,
            params.n_epochs,
            params.seed,
            args.hyper.threads,
            if args.hyper.threads == 1 { "" } else { "s" },
            model.meta.fit_seconds,
            model.meta.train_rmse.unwrap_or(f64::NAN),
        );
        out!(
            "wrote {} (model {}, {:.1} MiB)",
            args.out.display(),
            model.id,
            size as f64 / 1048576.0
        );
    }
    Ok(model)
}

/// Runs `recstream train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    train_model(&args.fit)?;
    if let (true, Some(brokers)) = (args.publish, &args.brokers) {
        super::model::publish(
            &args.fit.out,
            &args.kafka.settings(brokers),
            &args.publish_topics,
            None,
        )?;
    }
    Ok(())
}
