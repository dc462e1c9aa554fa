//! `recstream eval`: k-fold cross-validation or train/test evaluation, as a table or JSON.

use crate::output::out;
use std::path::{Path, PathBuf};

use clap::Args;
use recstream_core::Dataset;
use recstream_core::eval::{
    CvReport, EvalConfig, FoldReport, align_test_set, cross_validate, evaluate_split,
};

use crate::args::{HyperparamArgs, RatingsFormatArgs};
use crate::progress::Progress;

/// Arguments of `recstream eval`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["ratings", "train"])))]
pub struct EvalArgs {
    /// Ratings file to cross-validate.
    #[arg(long, conflicts_with_all = ["train", "test"])]
    ratings: Option<PathBuf>,

    /// Number of folds.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..))]
    folds: u16,

    /// Training file (with --test) instead of cross-validation.
    #[arg(long, requires = "test")]
    train: Option<PathBuf>,

    /// Test file scored by the model trained on --train.
    #[arg(long, requires = "train")]
    test: Option<PathBuf>,

    /// Length of the ranked lists for precision@k, recall@k and NDCG@k.
    #[arg(short, long, default_value_t = 10)]
    k: usize,

    /// A held-out rating at or above this counts as relevant.
    #[arg(long, default_value_t = 4.0)]
    relevant: f32,

    /// Prequential instead: train on the first --split of the timeline, then
    /// replay the rest in time order, predicting each rating before learning
    /// it; compares online learning with the frozen batch model.
    #[arg(long, requires = "ratings")]
    prequential: bool,

    /// With --prequential: share of the timeline trained on.
    #[arg(long, default_value_t = 0.5)]
    split: f64,

    /// With --prequential: keep items as trained online (only users learn).
    #[arg(long)]
    freeze_items: bool,

    /// With --prequential: also replay with the users split between this
    /// many learners (comma-separated list), as `recstream learn` processes
    /// in one group split them, sharing item changes every --sync-every.
    #[arg(long, value_delimiter = ',', requires = "prequential")]
    learners: Vec<usize>,

    /// With --learners: ratings (over all learners) between two syncs of
    /// their item deltas; a list gives one row each. At 1,000 ratings/s,
    /// 100 is the learner's default --item-sync-ms of 100 ms.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100",
        requires = "learners"
    )]
    sync_every: Vec<usize>,

    /// Print one JSON object instead of a table (and no progress on stderr).
    #[arg(long)]
    json: bool,

    /// No progress bar and no progress lines on stderr.
    #[arg(long)]
    quiet: bool,

    #[command(flatten)]
    input: RatingsFormatArgs,

    /// Hyper-parameters; --seed also seeds the fold split.
    #[command(flatten)]
    hyper: HyperparamArgs,
}

impl EvalArgs {
    /// Progress on stderr would only get in the way of JSON readers too.
    fn quiet(&self) -> bool {
        self.quiet || self.json
    }
}

/// Runs `recstream eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    if let (Some(train), Some(test)) = (&args.train, &args.test) {
        return train_test(&args, train, test);
    }
    let Some(path) = &args.ratings else {
        anyhow::bail!("give --ratings FILE for cross-validation, or --train A --test B");
    };
    let data = args.input.read(path, args.quiet())?;
    if args.prequential {
        prequential(&args, &data)
    } else {
        cross_validation(&args, &data)
    }
}

/// Trains on one file and evaluates on another.
fn train_test(args: &EvalArgs, train_path: &Path, test_path: &Path) -> anyhow::Result<()> {
    let train_data = args.input.read(train_path, args.quiet())?;
    let test_data = args.input.read(test_path, args.quiet())?;
    let config = config(args, args.hyper.params(), args.hyper.scale(&train_data));
    let test = align_test_set(&train_data, &test_data);
    let progress = Progress::spinner("training and testing", args.quiet());
    let report = evaluate_split(
        &train_data.ratings,
        &test,
        train_data.users.len(),
        train_data.items.len(),
        &config,
    )?;
    progress.finish();
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(std::slice::from_ref(&report), None, args.k)?;
    }
    Ok(())
}

/// Trains on the oldest ratings, then replays the rest in time order, frozen and learning.
fn prequential(args: &EvalArgs, data: &Dataset) -> anyhow::Result<()> {
    let config = recstream_core::FitConfig {
        params: args.hyper.params(),
        threads: args.hyper.threads,
        scale: Some(args.hyper.scale(data)),
        titles: None,
        source: String::new(),
    };
    if !args.learners.is_empty() {
        return scale_out(args, data, &config);
    }
    let progress = Progress::spinner("training, then replaying in time order", args.quiet());
    let report = recstream_core::eval::prequential::prequential(
        data,
        args.split,
        &config,
        !args.freeze_items,
    )?;
    progress.finish();
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    out!(
        "trained on the first {} ratings, replayed {} in time order",
        report.train_ratings,
        report.replayed_ratings
    );
    out!("{:<24}{:>10}{:>16}", "", "RMSE", "hit rate@10");
    for (label, scores) in [
        ("frozen batch model", &report.frozen),
        ("learning online", &report.online),
    ] {
        out!(
            "{:<24}{:>10.4}{:>16.4}",
            label,
            scores.rmse,
            scores.hit_rate_at_10
        );
    }
    out!(
        "online learning cost {:.1} us per rating",
        report.online_seconds_per_rating * 1e6
    );
    Ok(())
}

/// The prequential replay through groups of learners: the single writer,
/// then each number of learners at each sync interval.
fn scale_out(
    args: &EvalArgs,
    data: &Dataset,
    config: &recstream_core::FitConfig<'_>,
) -> anyhow::Result<()> {
    use recstream_core::eval::scale_out::replay;
    if args.learners.contains(&0) || args.sync_every.contains(&0) {
        anyhow::bail!("--learners and --sync-every must be at least 1");
    }
    let timeline = recstream_core::eval::prequential::Timeline::cut(data, args.split, config)?;
    let update_items = !args.freeze_items;
    let runs = 1 + args.learners.len() * args.sync_every.len();
    let progress = Progress::steps(runs as u64, "replay", args.quiet());
    let mut reports = vec![replay(&timeline, 1, 1, update_items)];
    progress.inc();
    for &learners in &args.learners {
        for &sync_every in &args.sync_every {
            progress.message(format!("{learners} learner(s), sync every {sync_every}"));
            reports.push(replay(&timeline, learners, sync_every, update_items));
            progress.inc();
        }
    }
    progress.finish();
    if args.json {
        out!("{}", serde_json::to_string(&reports)?);
        return Ok(());
    }
    out!(
        "trained on the first {} ratings, replayed {} in time order{}",
        timeline.train_ratings,
        timeline.future.len(),
        if update_items { "" } else { ", items frozen" }
    );
    out!(
        "{:<10}{:>12}{:>10}{:>16}",
        "learners",
        "sync every",
        "RMSE",
        "hit rate@10"
    );
    for (i, r) in reports.iter().enumerate() {
        let label = if i == 0 {
            "single writer".to_string()
        } else {
            r.learners.to_string()
        };
        let every = if i == 0 {
            "-".to_string()
        } else {
            r.sync_every.to_string()
        };
        out!(
            "{:<10}{:>12}{:>10.4}{:>16.4}",
            label,
            every,
            r.online.rmse,
            r.online.hit_rate_at_10
        );
    }
    Ok(())
}

/// k-fold cross-validation, as surprise's `cross_validate`.
fn cross_validation(args: &EvalArgs, data: &Dataset) -> anyhow::Result<()> {
    let params = args.hyper.params();
    let seed = params.seed;
    let config = config(args, params, args.hyper.scale(data));
    let quiet = args.quiet();
    if !quiet {
        eprintln!("cross-validating SVD on {} folds (seed {seed})", args.folds);
    }
    let progress = Progress::steps(u64::from(args.folds), "fold", quiet);
    let report = cross_validate(
        data,
        usize::from(args.folds),
        seed,
        &config,
        &mut |fold, r| {
            if !quiet {
                progress.println(&format!(
                    "  fold {}: RMSE {:.4}, MAE {:.4}, fit {:.3} s",
                    fold + 1,
                    r.rmse,
                    r.mae,
                    r.fit_seconds
                ));
            }
            progress.inc();
        },
    )?;
    progress.finish();
    if args.json {
        out!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report.folds, Some(&report), args.k)?;
    }
    Ok(())
}

fn config(
    args: &EvalArgs,
    params: recstream_core::Hyperparams,
    scale: recstream_core::RatingScale,
) -> EvalConfig {
    EvalConfig {
        params,
        threads: args.hyper.threads,
        scale,
        k: args.k,
        relevance_threshold: args.relevant,
    }
}

/// A table row: label, the value of a fold, decimals shown.
type Row = (String, fn(&FoldReport) -> f64, usize);

/// A table in the layout of surprise's `cross_validate(verbose=True)`.
fn print_table(folds: &[FoldReport], cv: Option<&CvReport>, k: usize) -> std::io::Result<()> {
    let rows: [Row; 7] = [
        ("RMSE".into(), |r| r.rmse, 4),
        ("MAE".into(), |r| r.mae, 4),
        (format!("Precision@{k}"), |r| r.precision_at_k, 4),
        (format!("Recall@{k}"), |r| r.recall_at_k, 4),
        (format!("NDCG@{k}"), |r| r.ndcg_at_k, 4),
        ("Fit time (s)".into(), |r| r.fit_seconds, 3),
        ("Test time (s)".into(), |r| r.test_seconds, 3),
    ];
    let mut header = format!("{:<16}", "");
    if cv.is_some() {
        for f in 1..=folds.len() {
            header.push_str(&format!("{:>9}", format!("Fold {f}")));
        }
        header.push_str(&format!("{:>9}{:>9}", "Mean", "Std"));
    } else {
        header.push_str(&format!("{:>9}", "Test"));
    }
    out!("{header}");
    for (name, get, decimals) in rows {
        let values: Vec<f64> = folds.iter().map(get).collect();
        let mut line = format!("{name:<16}");
        for v in &values {
            line.push_str(&format!("{v:>9.decimals$}"));
        }
        if cv.is_some() {
            let mean = values.iter().sum::<f64>() / values.len() as f64;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>()
                / values.len() as f64)
                .sqrt();
            line.push_str(&format!("{mean:>9.decimals$}{std:>9.decimals$}"));
        }
        out!("{line}");
    }
    Ok(())
}
