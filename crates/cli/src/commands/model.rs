//! `recstream model info`: what a model file holds and how it was trained.

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
}

/// Runs a model command.
pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    let ModelCommand::Info { model: path, json } = args.command;
    let model = modelfile::load(&path).with_context(|| format!("loading {}", path.display()))?;
    let info = serde_json::json!({
        "model_version": model.id,
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
        println!("{info}");
    } else {
        println!(
            "{}: model {} (format version {}), checksum OK",
            path.display(),
            model.id,
            modelfile::FORMAT_VERSION
        );
        println!(
            "  {} users, {} items, {} factors, {} titles",
            model.users.len(),
            model.items.len(),
            model.svd.n_factors,
            info["titles"]
        );
        println!(
            "  trained on {} ratings from {:?}, seed {}, {} thread(s), {:.3} s, train RMSE {:.4}",
            model.meta.n_ratings,
            model.meta.source,
            model.meta.params.seed,
            model.meta.threads,
            model.meta.fit_seconds,
            model.meta.train_rmse.unwrap_or(f64::NAN)
        );
        println!(
            "  hyper-parameters: {}",
            serde_json::to_string(&model.meta.params)?
        );
    }
    Ok(())
}
