//! `recstream run`: the whole service in one command, on an embedded broker unless one is given.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use rdkafka::message::Message;
use recstream_core::data::{ReadOptions, read_ratings, read_titles};
use recstream_core::{FitConfig, Hyperparams, Model, modelfile};
use recstream_datasets::FetchOptions;
use recstream_stream::embedded::EmbeddedBroker;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::metrics::Health;
use recstream_stream::tools::{self, ConsumeLimits, StartAt};
use recstream_stream::topics::ensure_topics;
use tokio_util::sync::CancellationToken;

use super::serve::{WorkerArgs, load_model, serve_until_stopped, start_metrics};
use crate::args::{KafkaProperties, runtime};

/// Arguments of `recstream run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kafka brokers to use; without it an embedded in-memory broker is started.
    #[arg(long, env = "RECSTREAM_BROKERS")]
    brokers: Option<String>,

    #[command(flatten)]
    properties: KafkaProperties,

    /// Model to serve; without it MovieLens 100K is fetched and a model trained (once).
    #[arg(long)]
    model: Option<PathBuf>,

    /// Where MovieLens and the trained model are kept.
    #[arg(long, default_value = "data", env = "RECSTREAM_DATA_DIR")]
    data_dir: PathBuf,

    /// Also send a few sample requests and print the replies.
    #[arg(long)]
    demo: bool,

    /// Partitions of the request topic (and of the reply topics).
    #[arg(long, default_value_t = 4)]
    partitions: i32,

    #[command(flatten)]
    worker: WorkerArgs,
}

/// Runs `recstream run` until Ctrl-C or SIGTERM.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let model_path = match &args.model {
        Some(path) => path.clone(),
        None => movielens_model(&args.data_dir)?,
    };
    let model = load_model(&model_path)?;
    let topics = args.worker.topics(args.partitions);
    let embedded = match &args.brokers {
        Some(_) => None,
        None => Some(EmbeddedBroker::start(&topics).context("starting the embedded broker")?),
    };
    let brokers = match (&args.brokers, &embedded) {
        (Some(brokers), _) => brokers.clone(),
        (None, Some(broker)) => broker.bootstrap_servers().to_string(),
        (None, None) => anyhow::bail!("no broker"),
    };
    let mut settings = args.properties.settings(&brokers);
    if embedded.is_some() {
        // The in-process broker does not end a consumer's fetch wait when data
        // arrives, and latency matters more than batching for trying things
        // out: short fetch waits and no producer linger (--kafka still wins).
        let low_latency = [("fetch.wait.max.ms", "1"), ("linger.ms", "0")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        settings.overrides.splice(0..0, low_latency);
    }
    let result = runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        if args.brokers.is_some() {
            ensure_topics(&settings, &topics)
                .await
                .context("creating the topics")?;
        }
        let health = Arc::new(Health::default());
        let metrics = start_metrics(args.worker.metrics_addr, health.clone(), &shutdown).await?;
        let current = model.current();
        print_banner(
            &brokers,
            embedded.is_some(),
            &model_path,
            &current,
            &args.worker,
            metrics,
        );
        let worker = tokio::spawn(serve_until_stopped(
            args.worker.config(settings.clone()),
            model,
            health,
            shutdown.clone(),
        ));
        if args.demo {
            if let Err(e) = demo(&settings, &args.worker, shutdown.clone()).await {
                tracing::warn!("demo failed: {e:#}");
            }
            println!("\nThe worker keeps running; Ctrl-C stops it.");
        }
        worker.await.context("the worker task failed")?
    });
    // The broker goes last: clients must leave before it does.
    drop(embedded);
    result.map(drop)
}

fn print_banner(
    brokers: &str,
    embedded: bool,
    model_path: &Path,
    recommender: &recstream_core::Recommender,
    worker: &WorkerArgs,
    metrics: Option<std::net::SocketAddr>,
) {
    let model = recommender.model();
    println!("recstream is serving recommendations");
    if embedded {
        println!(
            "  broker   {brokers}  (embedded in-memory broker: for trying things out, not durable)"
        );
    } else {
        println!("  broker   {brokers}");
    }
    println!(
        "  model    {} ({}, {} users, {} movies)",
        model_path.display(),
        recommender.version(),
        model.users.len(),
        model.items.len()
    );
    println!(
        "  topics   requests {}  ->  replies {}, invalid requests {}",
        worker.input_topic, worker.output_topic, worker.dlq_topic
    );
    if let Some(addr) = metrics {
        println!("  metrics  http://{addr}/metrics");
    }
    println!("Send requests from another terminal with any Kafka client, for example:");
    println!(
        "  echo '{{\"uid\":196}}' | cargo run --release -- produce --brokers {brokers} --topic {}",
        worker.input_topic
    );
    println!(
        "  cargo run --release -- consume --brokers {brokers} --topic {} --from-beginning",
        worker.output_topic
    );
    println!(
        "  echo '{{\"uid\":196}}' | kcat -P -b {brokers} -t {}",
        worker.input_topic
    );
}

/// Fetches MovieLens 100K and trains the model once; later runs reuse it.
fn movielens_model(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let path = data_dir.join("ml-100k.rsm");
    if path.is_file() && modelfile::load(&path).is_ok() {
        return Ok(path);
    }
    let fetched = super::data::fetch_ml100k_verbose(&FetchOptions::new(data_dir))?;
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
    Ok(path)
}

/// Sends sample requests (one of them invalid) and prints what comes back.
async fn demo(
    settings: &KafkaSettings,
    worker: &WorkerArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let run_id: u32 = rand::random();
    let requests = [
        format!(r#"{{"uid": 196, "n": 5, "request_id": "demo-{run_id}-1"}}"#),
        format!(r#"{{"uid": "186", "n": 3, "request_id": "demo-{run_id}-2"}}"#),
        format!(r#"{{"uid": 424242, "n": 3, "request_id": "demo-{run_id}-3"}}"#),
        format!(r#"{{"user": 196, "request_id": "demo-{run_id}-4"}}"#),
    ];
    println!(
        "\nDemo: sending {} requests to {} (the last one is invalid)",
        requests.len(),
        worker.input_topic
    );
    for request in &requests {
        println!("  > {request}");
    }
    let input = tokio::io::BufReader::new(std::io::Cursor::new(requests.join("\n").into_bytes()));
    tools::produce_lines(settings, &worker.input_topic, input, shutdown.clone())
        .await
        .context("sending the demo requests")?;

    let marker = format!("demo-{run_id}-");
    let limits = ConsumeLimits {
        max_messages: None,
        idle_timeout: Some(Duration::from_secs(20)),
    };
    let mut replies = 0;
    let mut seen_ids = Vec::new();
    let deadline = shutdown.child_token();
    let stop = deadline.clone();
    tools::consume(
        settings,
        &worker.output_topic,
        StartAt::Beginning,
        limits.clone(),
        deadline,
        |message| {
            let Some(payload) = message.payload_view::<str>().and_then(Result::ok) else {
                return;
            };
            let Ok(reply) = serde_json::from_str::<serde_json::Value>(payload) else {
                return;
            };
            let Some(id) = reply["request_id"]
                .as_str()
                .filter(|id| id.starts_with(&marker))
            else {
                return;
            };
            if seen_ids.iter().any(|seen: &String| seen == id) {
                return;
            }
            seen_ids.push(id.to_string());
            print_reply(&reply);
            replies += 1;
            if replies == 3 {
                stop.cancel();
            }
        },
    )
    .await
    .context("reading the replies")?;
    let deadline = shutdown.child_token();
    let stop = deadline.clone();
    tools::consume(
        settings,
        &worker.dlq_topic,
        StartAt::Beginning,
        limits,
        deadline,
        |message| {
            let Some(payload) = message.payload_view::<str>().and_then(Result::ok) else {
                return;
            };
            if payload.contains(&marker) {
                println!("\n  dead letter on {}: {payload}", worker.dlq_topic);
                stop.cancel();
            }
        },
    )
    .await
    .context("reading the dead letters")?;
    Ok(())
}

fn print_reply(reply: &serde_json::Value) {
    let cold = reply["cold_start"].as_bool().unwrap_or(false);
    println!(
        "\n  < user {}{} (model {}):",
        reply["uid"],
        if cold {
            ", unknown: popular movies instead"
        } else {
            ""
        },
        reply["model_version"].as_str().unwrap_or("?")
    );
    for (rank, rec) in reply["recommendations"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        println!(
            "    {:>2}. {:.2}  {}",
            rank + 1,
            rec["score"].as_f64().unwrap_or(f64::NAN),
            rec["title"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("(no title)")
        );
    }
}
