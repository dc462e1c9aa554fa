//! `recstream run`: the whole service in one command, on an embedded broker unless one is given.

use crate::output::out;
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
use recstream_stream::topics;
use tokio_util::sync::CancellationToken;

use recstream_stream::learner;

use super::learn::LearnerArgs;
use super::serve::{WorkerArgs, serve_until_stopped, start_metrics};
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

    /// Partitions of the request, reply and rating topics [default: 4; 1 on
    /// the embedded broker, where fewer, larger message batches keep it fast].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: Option<i32>,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Do not run a learner: ratings are not folded into the model.
    #[arg(long)]
    no_learn: bool,

    #[command(flatten)]
    learner: LearnerArgs,
}

/// Runs `recstream run` until Ctrl-C or SIGTERM.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    // Settings that can never work are refused before anything starts.
    let unchecked = KafkaSettings::new("");
    args.worker
        .config(unchecked.clone())
        .check()
        .context("checking the settings")?;
    if !args.no_learn {
        args.learner
            .config(unchecked, &args.worker.model_topic)
            .check()
            .context("checking the settings")?;
    }
    let mut learner_args = args.learner.clone();
    if args.brokers.is_none() {
        // What was learnt on an earlier run's embedded broker is kept under
        // the data folder, and the next run starts from it.
        learner_args.snapshot_dir = args.data_dir.join("snapshots");
    }
    let batch_path = match &args.model {
        Some(path) => path.clone(),
        None => movielens_model(&args.data_dir)?,
    };
    let model_path = match carried_over_snapshot(&args, &learner_args.snapshot_dir, &batch_path)? {
        Some(snapshot) => snapshot,
        None => batch_path,
    };
    let base_model = recstream_core::modelfile::load(&model_path)
        .with_context(|| format!("loading the model {}", model_path.display()))?;
    tracing::info!(model = %base_model.version(), users = base_model.users.len(), items = base_model.items.len(), "model loaded");
    let model = recstream_stream::serving::ServingModel::new(recstream_core::Recommender::new(
        base_model.clone(),
    ));
    let partitions = args.partitions.unwrap_or(match args.brokers {
        Some(_) => 4,
        None => 1,
    });
    let mut topics = args.worker.topics(partitions);
    if !args.no_learn {
        for topic in args.learner.topics(partitions, &args.worker.model_topic) {
            if topics.iter().all(|t| t.name != topic.name) {
                topics.push(topic);
            }
        }
    }
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
        // The in-process broker does not end a consumer's fetch wait when
        // data arrives: short fetch waits. It finds a fetch's batch by walking
        // the partition's batches from the oldest and returns one batch a
        // partition per fetch, so its cost grows with the number of batches:
        // producers batch for 5 ms, which with one partition a topic makes
        // batches of ~5 messages at 1,000/s (measured in BENCHMARKS.md:
        // sustained load). --kafka still wins.
        let embedded_tuning = [("fetch.wait.max.ms", "1"), ("linger.ms", "5")]
            .map(|(k, v)| (k.to_string(), v.to_string()));
        settings.overrides.splice(0..0, embedded_tuning);
    }
    let result = runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        // On a cluster of yours, the missing topics are created and every
        // topic checked; the embedded broker was started with them.
        if args.brokers.is_some() {
            topics::prepare(&settings, &topics, true, &shutdown)
                .await
                .context("checking the topics")?;
        }
        let health = Arc::new(Health::default());
        let metrics = start_metrics(args.worker.metrics_addr, health.clone(), &shutdown).await?;
        {
            let current = model.current();
            let recommender = recstream_stream::serving::read(&current);
            print_banner(
                &brokers,
                embedded.is_some(),
                &model_path,
                &recommender,
                &args,
                metrics,
            )
            .unwrap_or_else(|e| {
                // A reader that went away after the broker line is no
                // reason to stop serving.
                tracing::debug!("banner not printed in full: {e}");
            });
        }
        let worker = tokio::spawn(serve_until_stopped(
            args.worker.config(settings.clone()),
            model,
            health,
            shutdown.clone(),
        ));
        let learner = (!args.no_learn && !args.worker.no_follow).then(|| {
            let config = learner_args.config(settings.clone(), &args.worker.model_topic);
            tokio::spawn(learner::run(config, base_model, shutdown.clone()))
        });
        if args.demo {
            if let Err(e) = demo(&settings, &args, shutdown.clone()).await {
                tracing::warn!("demo failed: {e:#}");
            }
            out!("\nThe service keeps running; Ctrl-C stops it.");
        }
        let learnt = match learner {
            Some(learner) => learner
                .await
                .context("the learner task failed")
                .and_then(|r| r.context("learning").map(drop)),
            None => Ok(()),
        };
        if learnt.is_err() {
            // Stop the worker too, letting it drain and commit, then report.
            shutdown.cancel();
        }
        let served = worker.await.context("the worker task failed")?;
        learnt?;
        served
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
    args: &RunArgs,
    metrics: Option<std::net::SocketAddr>,
) -> std::io::Result<()> {
    let model = recommender.model();
    let worker = &args.worker;
    out!("recstream is serving recommendations");
    if embedded {
        out!(
            "  broker   {brokers}  (embedded in-memory broker: for trying things out, not durable)"
        );
        out!(
            "  limits   forgets everything when run stops; keeps the last 5 MiB of each partition;"
        );
        out!(
            "           on 2 cores it holds 1,000 requests/s from clients that batch (linger.ms=5),"
        );
        out!("           and slows down under mixed request and rating load once its topics hold");
        out!("           5 MiB (see the README). For load tests, or data you keep: --brokers");
    } else {
        out!("  broker   {brokers}");
    }
    out!(
        "  model    {} ({}, {} users, {} movies)",
        model_path.display(),
        recommender.version(),
        model.users.len(),
        model.items.len()
    );
    out!(
        "  topics   requests {}  ->  replies {}, invalid requests {}",
        worker.input_topic,
        worker.output_topic,
        worker.dlq_topic
    );
    if !args.no_learn && !worker.no_follow {
        out!(
            "           ratings {}  ->  model updates {} (learnt online, applied live)",
            args.learner.ratings_topic,
            worker.model_topic
        );
    }
    if let Some(addr) = metrics {
        out!("  metrics  http://{addr}/metrics");
    }
    out!("Send requests and ratings from another terminal with any Kafka client, for example:");
    out!(
        "  echo '{{\"uid\":196}}' | cargo run --release -- produce --brokers {brokers} --topic {}",
        worker.input_topic
    );
    out!(
        "  cargo run --release -- consume --brokers {brokers} --topic {} --from-beginning",
        worker.output_topic
    );
    if !args.no_learn && !worker.no_follow {
        out!(
            "  echo '{{\"uid\":196,\"iid\":242,\"rating\":5}}' | cargo run --release -- produce --brokers {brokers} --topic {}",
            args.learner.ratings_topic
        );
    }
    out!(
        "  echo '{{\"uid\":196}}' | kcat -P -b {brokers} -t {}",
        worker.input_topic
    );
    Ok(())
}

/// The snapshot an earlier run on the embedded broker left in `dir`, made
/// ready for a new, empty broker: its topic positions (offsets on a broker
/// that is gone) are dropped, so the learner and the worker start from the
/// learnt model and read the new topics from their beginning. `None` with no
/// snapshot, or one of another batch model than `batch` or that cannot be
/// read: that one is set aside (renamed), so the learner does not pick it up.
fn carried_over_snapshot(
    args: &RunArgs,
    dir: &Path,
    batch: &Path,
) -> anyhow::Result<Option<PathBuf>> {
    if args.brokers.is_some() {
        return Ok(None);
    }
    let Some(path) = learner::latest_snapshot(dir) else {
        return Ok(None);
    };
    let batch_id = modelfile::load(batch)
        .with_context(|| format!("loading the model {}", batch.display()))?
        .id;
    let mut snapshot = match modelfile::load(&path) {
        Ok(snapshot) if snapshot.base_id() == batch_id => snapshot,
        outcome => {
            let aside = path.with_extension("rsm.old");
            let why = match outcome {
                Ok(other) => format!("it was learnt on another batch model ({})", other.base_id()),
                Err(e) => e.to_string(),
            };
            tracing::warn!(
                "not starting from {} ({why}); moved to {}",
                path.display(),
                aside.display()
            );
            std::fs::rename(&path, &aside)
                .with_context(|| format!("moving {} aside", path.display()))?;
            return Ok(None);
        }
    };
    if let Some(online) = snapshot.meta.online.as_mut() {
        online.positions.clear();
    }
    modelfile::save(&mut snapshot, &path)
        .with_context(|| format!("rewriting {}", path.display()))?;
    eprintln!(
        "starting from what an earlier run learnt: {} ({})",
        path.display(),
        snapshot.version()
    );
    Ok(Some(path))
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

/// Sends sample requests (one of them invalid) and prints what comes back;
/// with a learner, also shows a rating changing the next answer.
async fn demo(
    settings: &KafkaSettings,
    args: &RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let worker = &args.worker;
    let run_id: u32 = rand::random();
    let marker = format!("demo-{run_id}-");
    // One reader for the whole demo: replies to our requests come back through it.
    let (replies_tx, mut replies) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    let reader_stop = shutdown.child_token();
    let reader = {
        let (settings, topic, marker, stop) = (
            settings.clone(),
            worker.output_topic.clone(),
            marker.clone(),
            reader_stop.clone(),
        );
        tokio::spawn(async move {
            tools::consume(
                &settings,
                &topic,
                StartAt::Beginning,
                ConsumeLimits::default(),
                stop,
                |message| {
                    let reply = message
                        .payload_view::<str>()
                        .and_then(Result::ok)
                        .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok());
                    if let Some(reply) = reply.filter(|r| {
                        r["request_id"]
                            .as_str()
                            .is_some_and(|id| id.starts_with(&marker))
                    }) {
                        let _ = replies_tx.send(reply);
                    }
                    std::ops::ControlFlow::Continue(())
                },
            )
            .await
        })
    };
    let send = |topic: String, lines: Vec<String>| {
        let (settings, shutdown) = (settings.clone(), shutdown.clone());
        async move {
            let input =
                tokio::io::BufReader::new(std::io::Cursor::new(lines.join("\n").into_bytes()));
            tools::produce_lines(&settings, &topic, input, shutdown).await
        }
    };
    let mut wait_for = async |ids: &[String]| -> Vec<serde_json::Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while got.len() < ids.len() {
            match tokio::time::timeout_at(deadline, replies.recv()).await {
                Ok(Some(reply)) if ids.iter().any(|id| reply["request_id"] == id.as_str()) => {
                    got.push(reply)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        got
    };

    let requests = [
        (r#""uid": 196, "n": 5"#, "1"),
        (r#""uid": "186", "n": 3"#, "2"),
        (r#""uid": 424242, "n": 3"#, "3"),
        (r#""user": 196"#, "4"),
    ];
    let lines: Vec<String> = requests
        .iter()
        .map(|(body, n)| format!(r#"{{{body}, "request_id": "{marker}{n}"}}"#))
        .collect();
    out!(
        "\nDemo: sending {} requests to {} (the last one is invalid)",
        lines.len(),
        worker.input_topic
    );
    for line in &lines {
        out!("  > {line}");
    }
    send(worker.input_topic.clone(), lines)
        .await
        .context("sending the demo requests")?;
    let ids: Vec<String> = (1..=3).map(|n| format!("{marker}{n}")).collect();
    let answered = wait_for(&ids).await;
    for reply in &answered {
        print_reply(reply)?;
    }
    let letters = read_dead_letter(settings, &worker.dlq_topic, &marker, shutdown.clone()).await?;
    if let Some(letter) = letters {
        out!("\n  dead letter on {}: {letter}", worker.dlq_topic);
    }

    if !args.no_learn && !worker.no_follow {
        let first = answered.iter().find(|r| r["uid"] == 196);
        if let Some(top) = first.and_then(|r| r["recommendations"][0].clone().as_object().cloned())
        {
            let (iid, title) = (
                top["iid"].clone(),
                top["title"].as_str().unwrap_or("?").to_string(),
            );
            out!(
                "\nOnline learning: user 196 watches their top recommendation, {title}, and rates it 1 star"
            );
            let rating = format!(r#"{{"uid": 196, "iid": {iid}, "rating": 1}}"#);
            out!("  > {rating}   (to {})", args.learner.ratings_topic);
            send(args.learner.ratings_topic.clone(), vec![rating])
                .await
                .context("sending the demo rating")?;
            // Ask again until the answer reflects the rating.
            for attempt in 5..25 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let id = format!("{marker}{attempt}");
                send(
                    worker.input_topic.clone(),
                    vec![format!(r#"{{"uid": 196, "n": 5, "request_id": "{id}"}}"#)],
                )
                .await?;
                let Some(reply) = wait_for(std::slice::from_ref(&id)).await.pop() else {
                    continue;
                };
                let gone = reply["recommendations"]
                    .as_array()
                    .is_some_and(|recs| recs.iter().all(|r| r["iid"] != iid));
                if gone {
                    print_reply(&reply)?;
                    out!(
                        "\n  {title} is no longer recommended: the rating reached the worker live."
                    );
                    break;
                }
            }
        }
    }
    reader_stop.cancel();
    let _ = reader.await;
    Ok(())
}

/// The first dead letter on `topic` whose payload carries `marker`.
async fn read_dead_letter(
    settings: &KafkaSettings,
    topic: &str,
    marker: &str,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<String>> {
    let stop = shutdown.child_token();
    let found = std::sync::Mutex::new(None);
    let limits = ConsumeLimits {
        max_messages: None,
        idle_timeout: Some(Duration::from_secs(20)),
    };
    tools::consume(
        settings,
        topic,
        StartAt::Beginning,
        limits,
        stop.clone(),
        |message| {
            let Some(payload) = message.payload_view::<str>().and_then(Result::ok) else {
                return std::ops::ControlFlow::Continue(());
            };
            if payload.contains(marker) {
                if let Ok(mut slot) = found.lock() {
                    slot.get_or_insert_with(|| payload.to_string());
                }
                return std::ops::ControlFlow::Break(());
            }
            std::ops::ControlFlow::Continue(())
        },
    )
    .await
    .context("reading the dead letters")?;
    Ok(found.into_inner().unwrap_or_default())
}

fn print_reply(reply: &serde_json::Value) -> std::io::Result<()> {
    let cold = reply["cold_start"].as_bool().unwrap_or(false);
    out!(
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
        out!(
            "    {:>2}. {:.2}  {}",
            rank + 1,
            rec["score"].as_f64().unwrap_or(f64::NAN),
            rec["title"]
                .as_str()
                .filter(|t| !t.is_empty())
                .unwrap_or("(no title)")
        );
    }
    Ok(())
}
