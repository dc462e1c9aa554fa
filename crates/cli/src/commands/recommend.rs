//! `recstream recommend`: the top movies for one user, from a model file.

use crate::output::out;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use recstream_core::recommend::MAX_N;
use recstream_core::{Recommendations, Recommender, modelfile};

/// Arguments of `recstream recommend`.
#[derive(Debug, Args)]
pub struct RecommendArgs {
    /// Model file written by `recstream train`.
    #[arg(long, default_value = "model.rsm")]
    model: PathBuf,

    /// User id as in the ratings file.
    #[arg(long, short)]
    user: String,

    /// How many movies (1 to 100).
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=MAX_N as i64))]
    n: u16,

    /// Print one JSON object (the shape of the streaming replies) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `recstream recommend`.
pub fn run(args: RecommendArgs) -> anyhow::Result<()> {
    let model = modelfile::load(&args.model)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let recommender = Recommender::new(model);
    let answer = recommender.recommend(&args.user, usize::from(args.n));
    if args.json {
        out!("{}", serde_json::to_string(&answer)?);
    } else {
        print_table(&answer)?;
    }
    Ok(())
}

fn print_table(answer: &Recommendations) -> std::io::Result<()> {
    if answer.cold_start {
        out!(
            "User {} is not in the model: most popular well-rated movies instead (cold start, model {}).",
            answer.uid,
            answer.model_version
        );
    } else {
        out!(
            "Top {} for user {} (model {}):",
            answer.recommendations.len(),
            answer.uid,
            answer.model_version
        );
    }
    for (rank, r) in answer.recommendations.iter().enumerate() {
        let title = if r.title.is_empty() {
            "(no title)"
        } else {
            r.title.as_str()
        };
        out!("{:>3}. {:.2}  {title}  [item {}]", rank + 1, r.score, r.iid);
    }
    Ok(())
}
