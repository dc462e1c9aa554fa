//! `recstream data`: fetch MovieLens 100K, or write a synthetic ratings file.

use crate::output::out;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use recstream_core::data::{ReadOptions, read_ratings};
use recstream_core::synth::{SyntheticSpec, generate};
use recstream_datasets::{FetchOptions, FetchProgress, Fetched, Source, fetch_ml100k};

use crate::progress::Progress;

/// Data set commands.
#[derive(Debug, Args)]
pub struct DataArgs {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Download a public data set (GroupLens first, RecBole's wheel on PyPI when GroupLens is unreachable).
    Fetch(FetchArgs),
    /// Write a synthetic ratings file (u.data layout) with a known low-rank structure.
    Synth(SynthArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DatasetName {
    /// MovieLens 100K: 100,000 ratings of 1,682 movies by 943 users.
    #[value(name = "ml-100k")]
    Ml100k,
}

#[derive(Debug, Args)]
struct FetchArgs {
    /// The data set to fetch.
    dataset: DatasetName,
    /// Folder that receives ml-100k/.
    #[arg(long, default_value = "data", env = "RECSTREAM_DATA_DIR")]
    dir: PathBuf,
    /// Download again even if the files are already there.
    #[arg(long)]
    force: bool,
    /// Package index used for the RecBole fallback.
    #[arg(long, default_value = recstream_datasets::DEFAULT_PYPI_URL, env = "RECSTREAM_PYPI_URL")]
    pypi_url: String,
    /// Official archive URL.
    #[arg(long, default_value = recstream_datasets::GROUPLENS_ML100K_URL)]
    grouplens_url: String,
    /// No progress bar and no step lines on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct SynthArgs {
    /// Number of users.
    #[arg(long, default_value_t = 943)]
    users: usize,
    /// Number of items.
    #[arg(long, default_value_t = 1682)]
    items: usize,
    /// Number of ratings.
    #[arg(long, default_value_t = 100_000)]
    ratings: usize,
    /// Seed; the same seed gives the same file.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file.
    #[arg(long)]
    out: PathBuf,
}

/// Runs a data command.
pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Fetch(args) => fetch(args),
        DataCommand::Synth(args) => synth(args),
    }
}

fn fetch(args: FetchArgs) -> anyhow::Result<()> {
    let DatasetName::Ml100k = args.dataset;
    let options = FetchOptions {
        force: args.force,
        pypi_url: args.pypi_url,
        grouplens_url: args.grouplens_url,
        ..FetchOptions::new(&args.dir)
    };
    let fetched = fetch_ml100k_verbose(&options, args.quiet)?;
    let (data, report) = read_ratings(&fetched.ratings, ReadOptions::default())
        .with_context(|| format!("checking {}", fetched.ratings.display()))?;
    out!(
        "ratings: {} ({} format)",
        fetched.ratings.display(),
        report.format
    );
    out!("items:   {}", fetched.items.display());
    out!(
        "read {} ratings from {} users on {} items",
        data.len(),
        data.users.len(),
        data.items.len()
    );
    Ok(())
}

/// Fetches ML-100K, telling the user on stderr where it came from (unless
/// `quiet`), with a bar of the bytes downloaded on a terminal.
pub fn fetch_ml100k_verbose(options: &FetchOptions, quiet: bool) -> anyhow::Result<Fetched> {
    let mut progress = DownloadProgress {
        bar: Progress::bytes(quiet),
        quiet,
    };
    let fetched = fetch_ml100k(options, &mut progress)?;
    progress.bar.finish();
    if quiet {
        return Ok(fetched);
    }
    match &fetched.source {
        Source::GroupLens => eprintln!("fetched MovieLens 100K from GroupLens"),
        Source::RecboleWheel { wheel } => {
            eprintln!("fetched MovieLens 100K from {wheel} (SHA-256 verified against PyPI)")
        }
        Source::AlreadyPresent => eprintln!(
            "MovieLens 100K already in {}",
            options.dir.join("ml-100k").display()
        ),
    }
    Ok(fetched)
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let spec = SyntheticSpec {
        users: args.users,
        items: args.items,
        ratings: args.ratings,
        seed: args.seed,
    };
    let data = generate(&spec);
    let file = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut out = BufWriter::new(file);
    for (row, r) in data.ratings.iter().enumerate() {
        let user = data.users.raw(r.user).map_or("", |id| id.as_str());
        let item = data.items.raw(r.item).map_or("", |id| id.as_str());
        // The row number stands in for a timestamp, keeping the u.data layout.
        writeln!(out, "{user}\t{item}\t{}\t{row}", r.value)?;
    }
    out.flush()
        .with_context(|| format!("writing {}", args.out.display()))?;
    out!(
        "wrote {} ratings ({} users, {} items, seed {}) to {}",
        data.len(),
        data.users.len(),
        data.items.len(),
        args.seed,
        args.out.display()
    );
    Ok(())
}

/// A fetch's steps as lines and its downloads as a bar of bytes.
struct DownloadProgress {
    bar: Progress,
    quiet: bool,
}

impl FetchProgress for DownloadProgress {
    fn step(&mut self, line: &str) {
        if !self.quiet {
            self.bar.println(line);
        }
        self.bar.set(0, None);
        self.bar.message("downloading".into());
    }

    fn bytes(&mut self, received: u64, total: Option<u64>) {
        self.bar.set(received, total);
    }
}
