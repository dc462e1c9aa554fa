//! `recstream bench`: the benchmark harness's commands, each reported next to a peer.
//!
//! `bench train` times whole training runs and reports peak memory;
//! `bench topn` times one recommendation at a time against scoring and
//! sorting every item; `bench replies`, `bench latency` and `bench freshness`
//! measure a running service through Kafka, as a client would. The work is
//! in the `recstream-bench` crate (its docs say what each one compares
//! against); this module only parses the arguments and prints the results:
//! JSON or a table on stdout, progress (each training run, each `--every`
//! window) on stderr.

use crate::output::out;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use recstream_bench::freshness::{self, FreshnessSpec};
use recstream_bench::latency::{self, LatencySpec};
use recstream_bench::topn::{self, ModelSource, TopnSpec};
use recstream_bench::train::{self, TrainSpec};
use recstream_bench::{reply_rate, windows::Window};
use recstream_core::FitConfig;
use recstream_core::synth::{SyntheticSpec, generate};

use crate::args::{HyperparamArgs, RatingsFormatArgs};
use crate::progress::Progress;

/// Benchmark commands.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time training on a ratings file or a synthetic data set, with peak memory.
    Train(TrainBenchArgs),
    /// Time top-N recommendations against a score-all-then-sort baseline.
    Topn(TopnBenchArgs),
    /// Count the replies on a topic and their rate, from the replies' own timestamps.
    Replies(RepliesBenchArgs),
    /// Send requests at a steady rate and measure each reply's latency.
    Latency(LatencyBenchArgs),
    /// Send ratings at a steady rate and measure how soon replies reflect them.
    Freshness(FreshnessBenchArgs),
}

#[derive(Debug, Args)]
struct FreshnessBenchArgs {
    #[command(flatten)]
    kafka: crate::args::KafkaArgs,
    /// Topic the worker reads requests from.
    #[arg(long, default_value = "quickstart-events")]
    input_topic: String,
    /// Topic the worker writes replies to.
    #[arg(long, default_value = "recommendation-events")]
    output_topic: String,
    /// Topic the learner reads ratings from.
    #[arg(long, default_value = "rating-events")]
    ratings_topic: String,
    /// Ratings per second.
    #[arg(long, default_value_t = 1000.0, value_parser = crate::args::positive)]
    rate: f64,
    /// Seconds of rating.
    #[arg(long, default_value = "30", value_parser = crate::args::seconds)]
    duration: std::time::Duration,
    /// Users 1..=N to rate as.
    #[arg(long, default_value_t = 943, value_parser = clap::value_parser!(u64).range(1..))]
    users: u64,
    /// Also print the percentiles of every window of this many seconds
    /// (on stderr as they close, and in the JSON), to see a drift.
    #[arg(long, value_parser = crate::args::seconds)]
    every: Option<std::time::Duration>,
    /// No progress on stderr (on a terminal it shows the elapsed time).
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct RepliesBenchArgs {
    #[command(flatten)]
    kafka: crate::args::KafkaArgs,
    /// Reply topic to read from the beginning.
    #[arg(long, default_value = "recommendation-events")]
    topic: String,
    /// Stop once this many distinct requests were answered.
    #[arg(long)]
    expect: u64,
    /// Stop after this many seconds without a reply.
    #[arg(long, default_value = "30", value_parser = crate::args::seconds)]
    idle_timeout: std::time::Duration,
    /// No progress on stderr (on a terminal it shows the elapsed time).
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct LatencyBenchArgs {
    #[command(flatten)]
    kafka: crate::args::KafkaArgs,
    /// Topic the worker reads requests from.
    #[arg(long, default_value = "quickstart-events")]
    input_topic: String,
    /// Topic the worker writes replies to.
    #[arg(long, default_value = "recommendation-events")]
    output_topic: String,
    /// Requests per second.
    #[arg(long, default_value_t = 1000.0, value_parser = crate::args::positive)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value = "30", value_parser = crate::args::seconds)]
    duration: std::time::Duration,
    /// User ids to ask for, FIRST..LAST.
    #[arg(long, default_value = "1..943", value_name = "FIRST..LAST", value_parser = crate::args::uid_range)]
    uids: (u64, u64),
    /// Also print the percentiles of every window of this many seconds
    /// (on stderr as they close, and in the JSON), to see a drift.
    #[arg(long, value_parser = crate::args::seconds)]
    every: Option<std::time::Duration>,
    /// No progress on stderr (on a terminal it shows the elapsed time).
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct TrainBenchArgs {
    /// Ratings file to train on.
    #[arg(long, conflicts_with = "synthetic")]
    ratings: Option<PathBuf>,

    /// Synthetic data instead: ml-100k, ml-25m, or USERSxITEMSxRATINGS (e.g. 1000x2000x100000).
    #[arg(long, value_parser = parse_spec)]
    synthetic: Option<SyntheticSpec>,

    /// Training runs to time (the data is read once).
    #[arg(long, default_value_t = 3)]
    repeat: usize,

    /// Print one JSON object (and no progress on stderr).
    #[arg(long)]
    json: bool,

    /// No progress bar and no per-run lines on stderr.
    #[arg(long)]
    quiet: bool,

    #[command(flatten)]
    input: RatingsFormatArgs,

    #[command(flatten)]
    hyper: HyperparamArgs,
}

#[derive(Debug, Args)]
struct TopnBenchArgs {
    /// Model file to benchmark.
    #[arg(long, conflicts_with = "synthetic_items")]
    model: Option<PathBuf>,

    /// Random model with this many items instead (e.g. 60000).
    #[arg(long)]
    synthetic_items: Option<usize>,

    /// Factors of the random model.
    #[arg(long, default_value_t = 100)]
    factors: usize,

    /// Recommendations per request.
    #[arg(short, long, default_value_t = 10)]
    n: usize,

    /// Requests to time for each method.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,

    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// No progress on stderr (on a terminal it shows the elapsed time).
    #[arg(long)]
    quiet: bool,
}

fn parse_spec(s: &str) -> Result<SyntheticSpec, String> {
    match s {
        "ml-100k" => return Ok(SyntheticSpec::ML_100K),
        "ml-25m" => return Ok(SyntheticSpec::ML_25M),
        _ => {}
    }
    let parts: Vec<usize> = s
        .split('x')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| format!("{p:?} is not a count"))
        })
        .collect::<Result<_, _>>()?;
    match parts[..] {
        [users, items, ratings] => Ok(SyntheticSpec {
            users,
            items,
            ratings,
            seed: 42,
        }),
        _ => Err("expected ml-100k, ml-25m or USERSxITEMSxRATINGS".into()),
    }
}

/// Runs a benchmark command.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.command {
        BenchCommand::Train(args) => bench_train(args),
        BenchCommand::Topn(args) => bench_topn(args),
        BenchCommand::Replies(args) => bench_replies(args),
        BenchCommand::Latency(args) => bench_latency(args),
        BenchCommand::Freshness(args) => bench_freshness(args),
    }
}

/// Checks that the topics a benchmark writes to and reads from exist.
async fn check_topics(
    settings: &recstream_stream::kafka::KafkaSettings,
    names: &[&str],
) -> anyhow::Result<()> {
    let specs: Vec<_> = names
        .iter()
        .map(|name| recstream_stream::topics::TopicSpec::new(*name, 4))
        .collect();
    let shutdown = recstream_stream::shutdown::on_signals();
    recstream_stream::topics::check(settings, &specs, &shutdown)
        .await
        .context("checking the topics")
}

/// A spinner for a timed run, with one line per window above it as it closes.
fn timed_run(what: &str, duration: std::time::Duration, quiet: bool) -> Progress {
    Progress::spinner(
        &format!("{what} for {}", humantime::format_duration(duration)),
        quiet,
    )
}

/// One line per window on stderr, as it closes (above the spinner, if any).
fn print_window(progress: &Progress) -> impl FnMut(&Window) + '_ {
    |window| progress.println(&window.to_string())
}

fn bench_freshness(args: FreshnessBenchArgs) -> anyhow::Result<()> {
    let settings = args.kafka.settings();
    let spec = FreshnessSpec {
        requests_topic: args.input_topic,
        replies_topic: args.output_topic,
        ratings_topic: args.ratings_topic,
        rate: args.rate,
        duration: args.duration,
        users: args.users,
        every: args.every,
    };
    let runtime = crate::args::runtime()?;
    runtime.block_on(check_topics(
        &settings,
        &[
            &spec.requests_topic,
            &spec.replies_topic,
            &spec.ratings_topic,
        ],
    ))?;
    let progress = timed_run(
        &format!("{} ratings/s", spec.rate),
        spec.duration,
        args.quiet,
    );
    let stats = runtime.block_on(freshness::run(&settings, &spec, print_window(&progress)))?;
    progress.finish();
    out!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

fn bench_replies(args: RepliesBenchArgs) -> anyhow::Result<()> {
    let progress = Progress::spinner(
        &format!(
            "waiting for {} distinct replies on {}",
            args.expect, args.topic
        ),
        args.quiet,
    );
    let stats = crate::args::runtime()?.block_on(reply_rate::run(
        &args.kafka.settings(),
        &args.topic,
        args.expect,
        args.idle_timeout,
    ))?;
    progress.finish();
    out!("{}", serde_json::to_string(&stats)?);
    anyhow::ensure!(
        stats.distinct_requests >= args.expect,
        "only {} of {} requests were answered",
        stats.distinct_requests,
        args.expect
    );
    Ok(())
}

fn bench_latency(args: LatencyBenchArgs) -> anyhow::Result<()> {
    let uids = args.uids;
    let settings = args.kafka.settings();
    let spec = LatencySpec {
        input: args.input_topic,
        output: args.output_topic,
        rate: args.rate,
        duration: args.duration,
        uids,
        every: args.every,
    };
    let runtime = crate::args::runtime()?;
    runtime.block_on(check_topics(&settings, &[&spec.input, &spec.output]))?;
    let progress = timed_run(
        &format!("{} requests/s", spec.rate),
        spec.duration,
        args.quiet,
    );
    let stats = runtime.block_on(latency::run(&settings, &spec, print_window(&progress)))?;
    progress.finish();
    out!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

fn bench_train(args: TrainBenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (data, label) = match (&args.ratings, args.synthetic) {
        (Some(path), _) => (
            args.input.read(path, args.json || args.quiet)?,
            path.display().to_string(),
        ),
        (None, Some(spec)) => (generate(&spec), train::synthetic_label(&spec)),
        (None, None) => anyhow::bail!("give --ratings FILE or --synthetic SPEC"),
    };
    let spec = TrainSpec {
        load_seconds: started.elapsed().as_secs_f64(),
        config: FitConfig {
            params: args.hyper.params(),
            threads: args.hyper.threads,
            scale: Some(args.hyper.scale(&data)),
            titles: None,
            source: label.clone(),
        },
        label,
        repeat: args.repeat,
    };
    let quiet = args.json || args.quiet;
    let progress = Progress::steps(args.repeat as u64, "run", quiet);
    let report = train::run(&data, &spec, |fit| {
        if !quiet {
            progress.println(&fit.to_string());
        }
        progress.inc();
    })?;
    progress.finish();
    if args.json {
        // Through a `Value`, whose keys are sorted: the JSON as it always was.
        out!("{}", serde_json::to_value(&report)?);
    } else {
        out!("{report}");
    }
    Ok(())
}

fn bench_topn(args: TopnBenchArgs) -> anyhow::Result<()> {
    let source = match (args.model, args.synthetic_items) {
        (Some(path), _) => ModelSource::File(path),
        (None, Some(items)) => ModelSource::Synthetic {
            items,
            factors: args.factors,
        },
        (None, None) => anyhow::bail!("give --model FILE or --synthetic-items N"),
    };
    let spec = TopnSpec {
        n: args.n,
        requests: args.requests,
    };
    let progress = Progress::spinner(
        &format!("timing {} requests per method", spec.requests),
        args.quiet || args.json,
    );
    let report = topn::run(&source, &spec)?;
    progress.finish();
    if args.json {
        // Through a `Value`, whose keys are sorted: the JSON as it always was.
        out!("{}", serde_json::to_value(&report)?);
    } else {
        out!("{report}");
    }
    Ok(())
}
