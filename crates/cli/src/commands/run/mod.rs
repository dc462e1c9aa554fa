//! `recstream run`: the whole service in one command, on an embedded broker unless one is given.
//!
//! Start-up ([`start`]) settles what to serve and where: the model (MovieLens
//! trained once, or a snapshot an earlier run learnt), the topics, and the
//! broker (embedded, or the user's). Then the worker and the learner run as
//! tasks under one cancellation ([`tasks`]): Ctrl-C, SIGTERM, or the failure
//! of either one drains both before the process exits. The [`banner`] says
//! what is running and how to talk to it; the [`demo`] script, on request,
//! shows a request, a dead letter and a rating reaching the worker live.

mod banner;
mod demo;
mod start;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::learner;
use recstream_stream::metrics::Health;
use recstream_stream::serving::ServingModel;
use recstream_stream::topics;

use super::learn::LearnerArgs;
use super::serve::{WorkerArgs, serve_until_stopped, start_metrics};
use crate::args::{KafkaProperties, runtime};
use crate::output::out;
use start::{Broker, StartModel};
use tasks::Tasks;

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

    /// Partitions of the request, reply and rating topics.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Do not run a learner: ratings are not folded into the model.
    #[arg(long)]
    no_learn: bool,

    #[command(flatten)]
    learner: LearnerArgs,
}

impl RunArgs {
    /// Whether a learner runs (it needs workers that follow its updates).
    fn learns(&self) -> bool {
        !self.no_learn && !self.worker.no_follow
    }
}

/// Runs `recstream run` until Ctrl-C or SIGTERM.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    check_settings(&args)?;
    let mut learner_args = args.learner.clone();
    if args.brokers.is_none() {
        // What was learnt on an earlier run's embedded broker is kept under
        // the data folder, and the next run starts from it.
        learner_args.snapshot_dir = args.data_dir.join("snapshots");
    }
    let model = StartModel::resolve(&args, &learner_args.snapshot_dir)?;
    let topics = topics_to_serve(&args);
    let broker = Broker::start(&args, &topics)?;
    let result = runtime()?.block_on(serve(&args, &learner_args, model, &broker, &topics));
    // The broker goes last: clients must leave before it does.
    drop(broker);
    result
}

/// Settings that can never work are refused before anything starts.
fn check_settings(args: &RunArgs) -> anyhow::Result<()> {
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
    Ok(())
}

/// The worker's topics, and the learner's when it runs, each named once.
fn topics_to_serve(args: &RunArgs) -> Vec<topics::TopicSpec> {
    let partitions = args.partitions;
    let mut topics = args.worker.topics(partitions);
    if !args.no_learn {
        for topic in args.learner.topics(partitions, &args.worker.model_topic) {
            if topics.iter().all(|t| t.name != topic.name) {
                topics.push(topic);
            }
        }
    }
    topics
}

/// Checks the topics, prints the banner, then runs the worker and the
/// learner (and the demo) until a signal or a failure stops them.
async fn serve(
    args: &RunArgs,
    learner_args: &LearnerArgs,
    model: StartModel,
    broker: &Broker,
    topics: &[topics::TopicSpec],
) -> anyhow::Result<()> {
    let shutdown = recstream_stream::shutdown::on_signals();
    let settings = &broker.settings;
    // On a cluster of yours, the missing topics are created and every topic
    // checked; the embedded broker was started with them.
    if !broker.is_embedded() {
        topics::prepare(settings, topics, true, &shutdown)
            .await
            .context("checking the topics")?;
    }
    let health = Arc::new(Health::default());
    let metrics = start_metrics(args.worker.metrics_addr, health.clone(), &shutdown).await?;
    let serving = ServingModel::new(recstream_core::Recommender::new(model.model.clone()));
    banner::print(broker, &model.path, &serving, args, metrics).unwrap_or_else(|e| {
        // A reader that went away after the broker line is no reason to stop serving.
        tracing::debug!("banner not printed in full: {e}");
    });
    let mut tasks = Tasks::new(shutdown.clone());
    let config = args
        .worker
        .config(settings.clone())
        .check()
        .context("checking the settings")?;
    tasks.spawn("worker", async move {
        serve_until_stopped(config, serving, health, shutdown)
            .await
            .map(drop)
    });
    if args.learns() {
        let config = learner_args
            .config(settings.clone(), &args.worker.model_topic)
            .check()
            .context("checking the settings")?;
        let stop = tasks.shutdown();
        tasks.spawn("learner", async move {
            learner::run(config, model.model, stop)
                .await
                .context("learning")
                .map(drop)
        });
    }
    if args.demo {
        if let Err(e) = demo::run(settings, args, tasks.shutdown()).await {
            tracing::warn!("demo failed: {e:#}");
        }
        out!("\nThe service keeps running; Ctrl-C stops it.");
    }
    tasks.wait().await
}
