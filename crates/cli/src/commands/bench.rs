//! `recstream bench`: training and top-N benchmarks, each reported next to a peer run in the same process.
//!
//! `bench train` times whole training runs (reading or generating the data
//! included, as a user would experience them) and reports peak memory.
//! `bench topn` times one recommendation at a time against the obvious
//! alternative measured in the same run: score every item, sort them all.
//! Results are medians and percentiles over many calls, printed as a table
//! or JSON, because one number from a shared 2-core machine means little.

use crate::output::out;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use recstream_bench::freshness::{self, FreshnessSpec};
use recstream_bench::latency::{self, LatencySpec};
use recstream_bench::{reply_rate, windows::Window};
use recstream_core::recommend::Scratch;
use recstream_core::svd::kernels::dot;
use recstream_core::synth::{SyntheticSpec, generate, random_model};
use recstream_core::{FitConfig, Model, Recommender, modelfile};

use crate::args::{HyperparamArgs, RatingsFormatArgs};

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
    #[arg(long, default_value = "1..943")]
    uids: String,
    /// Also print the percentiles of every window of this many seconds
    /// (on stderr as they close, and in the JSON), to see a drift.
    #[arg(long, value_parser = crate::args::seconds)]
    every: Option<std::time::Duration>,
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

    /// Print one JSON object.
    #[arg(long)]
    json: bool,

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

/// One line per window on stderr, as it closes.
fn print_window(window: &Window) {
    eprintln!("{window}");
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
    let stats = runtime.block_on(freshness::run(&settings, &spec, print_window))?;
    out!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

fn bench_replies(args: RepliesBenchArgs) -> anyhow::Result<()> {
    let stats = crate::args::runtime()?.block_on(reply_rate::run(
        &args.kafka.settings(),
        &args.topic,
        args.expect,
        args.idle_timeout,
    ))?;
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
    let uids = args
        .uids
        .split_once("..")
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .filter(|(a, b)| a <= b)
        .context("--uids must be FIRST..LAST")?;
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
    let stats = runtime.block_on(latency::run(&settings, &spec, print_window))?;
    out!("{}", serde_json::to_string(&stats)?);
    Ok(())
}

fn bench_train(args: TrainBenchArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let (data, label) = match (&args.ratings, args.synthetic) {
        (Some(path), _) => (
            args.input.read(path, args.json)?,
            path.display().to_string(),
        ),
        (None, Some(spec)) => (
            generate(&spec),
            format!(
                "synthetic {}x{}x{} seed {}",
                spec.users, spec.items, spec.ratings, spec.seed
            ),
        ),
        (None, None) => anyhow::bail!("give --ratings FILE or --synthetic SPEC"),
    };
    let load_seconds = started.elapsed().as_secs_f64();
    let params = args.hyper.params();
    let config = FitConfig {
        params: params.clone(),
        threads: args.hyper.threads,
        scale: Some(args.hyper.scale(&data)),
        titles: None,
        source: label.clone(),
    };
    let mut fits = Vec::new();
    let mut rmse = f64::NAN;
    for run in 0..args.repeat.max(1) {
        let model = Model::fit(&data, &config, &mut |_| {}).context("training")?;
        if !args.json {
            eprintln!(
                "run {}: fit {:.3} s, train RMSE {:.4}",
                run + 1,
                model.meta.fit_seconds,
                model.meta.train_rmse.unwrap_or(f64::NAN)
            );
        }
        fits.push(model.meta.fit_seconds);
        rmse = model.meta.train_rmse.unwrap_or(f64::NAN);
    }
    let report = serde_json::json!({
        "data": label,
        "ratings": data.len(),
        "users": data.users.len(),
        "items": data.items.len(),
        "load_seconds": load_seconds,
        "threads": args.hyper.threads,
        "kernel": recstream_core::svd::kernels::kernel_name(),
        "n_factors": params.n_factors,
        "n_epochs": params.n_epochs,
        "fit_seconds": fits,
        "median_fit_seconds": median(&mut fits.clone()),
        "train_rmse": rmse,
        "peak_rss_mib": peak_rss_mib(),
    });
    if args.json {
        out!("{report}");
    } else {
        out!(
            "{label}: {} ratings, {} threads ({} kernel): load {:.2} s, fit median {:.3} s over {} run(s), train RMSE {:.4}, peak RSS {} MiB",
            data.len(),
            args.hyper.threads,
            recstream_core::svd::kernels::kernel_name(),
            load_seconds,
            median(&mut fits),
            args.repeat.max(1),
            rmse,
            report["peak_rss_mib"]
        );
    }
    Ok(())
}

fn bench_topn(args: TopnBenchArgs) -> anyhow::Result<()> {
    let model = match (&args.model, args.synthetic_items) {
        (Some(path), _) => {
            modelfile::load(path).with_context(|| format!("loading {}", path.display()))?
        }
        (None, Some(items)) => random_model(1000, items, args.factors, 100, 7),
        (None, None) => anyhow::bail!("give --model FILE or --synthetic-items N"),
    };
    let label = match &args.model {
        Some(path) => path.display().to_string(),
        None => model.meta.source.clone(),
    };
    let users: Vec<String> = (0..model.users.len() as u32)
        .filter(|&u| model.svd.knows_user(u))
        .filter_map(|u| model.users.raw(u).map(|id| id.as_str().to_string()))
        .collect();
    anyhow::ensure!(!users.is_empty(), "the model knows no user");
    let recommender = Recommender::new(model);
    let requests = args.requests.max(1);

    // Warm up caches and the branch predictor before timing.
    let mut scratch = Scratch::default();
    for uid in users.iter().take(200) {
        std::hint::black_box(recommender.recommend_with(uid, args.n, &mut scratch));
    }
    let mut fast = new_histogram()?;
    let mut naive = new_histogram()?;
    // Alternate methods in blocks so both see the same machine load.
    let block = 500;
    let mut done = 0;
    while done < requests {
        for i in done..(done + block).min(requests) {
            let uid = &users[i % users.len()];
            let t = Instant::now();
            std::hint::black_box(recommender.recommend_with(uid, args.n, &mut scratch));
            fast.saturating_record(t.elapsed().as_nanos() as u64);
        }
        for i in done..(done + block).min(requests) {
            let uid = &users[i % users.len()];
            let t = Instant::now();
            std::hint::black_box(score_all_then_sort(recommender.model(), uid, args.n));
            naive.saturating_record(t.elapsed().as_nanos() as u64);
        }
        done += block;
    }
    // Batched: 64 requests answered together (what the streaming worker does).
    let batch = 64;
    let asks: Vec<(&str, usize)> = users.iter().map(|u| (u.as_str(), args.n)).collect();
    let started = Instant::now();
    let mut answered = 0usize;
    while answered < requests {
        let from = answered % asks.len();
        let chunk = &asks[from..(from + batch).min(asks.len())];
        std::hint::black_box(recommender.recommend_many(chunk, &mut scratch));
        answered += chunk.len();
    }
    let batched_us = started.elapsed().as_secs_f64() * 1e6 / answered as f64;
    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let model = recommender.model();
    let report = serde_json::json!({
        "model": label,
        "items": model.items.len(),
        "n_factors": model.svd.n_factors,
        "n": args.n,
        "requests": requests,
        "partial_selection_us": {"p50": us(&fast, 0.5), "p99": us(&fast, 0.99), "mean": fast.mean() / 1000.0},
        "score_all_sort_all_us": {"p50": us(&naive, 0.5), "p99": us(&naive, 0.99), "mean": naive.mean() / 1000.0},
        "speedup_p50": us(&naive, 0.5) / us(&fast, 0.5).max(1e-9),
        "batched_64_us_per_request": batched_us,
    });
    if args.json {
        out!("{report}");
    } else {
        out!(
            "{label}: {} items x {} factors, top-{} over {requests} requests (single thread)",
            model.items.len(),
            model.svd.n_factors,
            args.n
        );
        out!(
            "  recstream (transposed scoring + partial selection): p50 {:>8.2} us  p99 {:>8.2} us",
            us(&fast, 0.5),
            us(&fast, 0.99)
        );
        out!(
            "  baseline  (dot per item, then sort every item):     p50 {:>8.2} us  p99 {:>8.2} us",
            us(&naive, 0.5),
            us(&naive, 0.99)
        );
        out!(
            "  speed-up at the median: {:.1}x",
            report["speedup_p50"].as_f64().unwrap_or(0.0)
        );
        out!(
            "  answered {batch} at a time (as the streaming worker does): {batched_us:.2} us per request"
        );
    }
    Ok(())
}

/// The straightforward method: estimate every unrated item, sort them all, keep n.
fn score_all_then_sort(model: &Model, uid: &str, n: usize) -> Vec<(u32, f32)> {
    let Some(u) = model.users.get(uid) else {
        return Vec::new();
    };
    let svd = &model.svd;
    let base = svd.global_mean + svd.user_bias[u as usize];
    let mut all: Vec<(u32, f32)> = (0..svd.n_items() as u32)
        .filter(|&i| !model.seen.contains(u, i))
        .map(|i| {
            (
                i,
                base + svd.item_bias[i as usize] + dot(svd.item_row(i), svd.user_row(u)),
            )
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.truncate(n);
    all
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).context("creating a latency histogram")
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Peak resident memory of this process (VmHWM), in MiB, on Linux.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}
