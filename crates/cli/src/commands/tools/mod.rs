//! `recstream produce` and `recstream consume`: the notebook producer and
//! the downstream consumer, as commands, on a Kafka topic or (built with
//! the `kinesis` feature) a Kinesis stream.

#[cfg(feature = "kinesis")]
mod kinesis;

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use rand::SeedableRng;
use recstream_bench::load::Load;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::tools::{self, ConsumeLimits, StartAt};
use tokio_util::sync::CancellationToken;

use crate::args::runtime;
use crate::streams::{KinesisArgs, OptionalKafkaArgs, is_kinesis};

/// Arguments of `recstream produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    kafka: OptionalKafkaArgs,

    #[command(flatten)]
    kinesis: KinesisArgs,

    /// Topic to write to (kinesis:STREAM for a Kinesis stream: each record
    /// is keyed by its uid).
    #[arg(long, default_value = "quickstart-events")]
    topic: String,

    /// Generate requests for random users in this range (e.g. 1..943) instead of reading stdin.
    #[arg(long, value_name = "FIRST..LAST", value_parser = crate::args::uid_range)]
    uids: Option<(u64, u64)>,

    /// With --uids or --ratings: messages per second (as fast as possible when omitted).
    #[arg(long, value_parser = crate::args::positive)]
    rate: Option<f64>,

    /// With --uids: how many requests.
    #[arg(long, requires = "uids", default_value_t = 1000)]
    count: u64,

    /// With --uids: prefix of the generated request ids.
    #[arg(long, default_value = "load")]
    id_prefix: String,

    /// Replay a ratings file (any format `train` reads) as rating events, in
    /// timestamp order, to --topic (use --topic rating-events).
    #[arg(long, conflicts_with = "uids")]
    ratings: Option<std::path::PathBuf>,

    /// With --ratings: how many events at most.
    #[arg(long, requires = "ratings")]
    limit: Option<usize>,

    /// With --ratings: skip this many events first (to replay the second half of a timeline, say).
    #[arg(long, requires = "ratings", default_value_t = 0)]
    skip: usize,

    /// Create --topic if it does not exist (without it a missing topic is an error at start).
    #[arg(long)]
    create_topics: bool,

    /// Partitions of the topic --create-topics creates.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(i32).range(1..))]
    partitions: i32,
}

/// Arguments of `recstream consume` (it waits for the topic to be created).
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    kafka: OptionalKafkaArgs,

    #[command(flatten)]
    kinesis: KinesisArgs,

    /// Topic to read (kinesis:STREAM for a Kinesis stream, every shard).
    #[arg(long, default_value = "recommendation-events")]
    topic: String,

    /// Start from the oldest message instead of new ones only.
    #[arg(long, conflicts_with = "group")]
    from_beginning: bool,

    /// Read as this consumer group, committing what was read (Kafka only).
    #[arg(long)]
    group: Option<String>,

    /// Stop after this many messages.
    #[arg(long)]
    max_messages: Option<u64>,

    /// Stop after this many seconds without a message.
    #[arg(long, value_parser = crate::args::seconds)]
    idle_timeout: Option<Duration>,

    /// What to print per message.
    #[arg(long, value_enum, default_value = "payload")]
    format: PrintFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PrintFormat {
    /// The payload, one message per line.
    Payload,
    /// A JSON object with topic, partition, offset, timestamp, key and
    /// payload (on Kinesis: stream, shard, sequence_number, timestamp, key
    /// and payload).
    Json,
}

/// A message: optional key and payload.
type Keyed = (Option<Vec<u8>>, Vec<u8>);

/// A ratings file as `{"uid", "iid", "rating", "ts"}` events keyed by user,
/// in timestamp order (file order for ties or files without timestamps).
fn rating_events(
    path: &std::path::Path,
    skip: usize,
    limit: Option<usize>,
) -> anyhow::Result<Vec<Keyed>> {
    let (data, _) =
        recstream_core::data::read_ratings(path, recstream_core::data::ReadOptions::default())
            .with_context(|| format!("reading {}", path.display()))?;
    let mut order: Vec<usize> = (0..data.len()).collect();
    if data.has_timestamps() {
        order.sort_by_key(|&i| (data.timestamps[i], i));
    }
    let id =
        |map: &recstream_core::IdMap, i: u32| map.raw(i).map(|r| r.to_json()).unwrap_or_default();
    Ok(order
        .into_iter()
        .skip(skip)
        .take(limit.unwrap_or(usize::MAX))
        .map(|i| {
            let r = data.ratings[i];
            let uid = id(&data.users, r.user);
            let event = serde_json::json!({
                "uid": uid,
                "iid": id(&data.items, r.item),
                "rating": r.value,
                "ts": data.timestamps.get(i),
            });
            (
                Some(uid.to_string().into_bytes()),
                event.to_string().into_bytes(),
            )
        })
        .collect())
}

/// Messages made ahead of sending, in order.
type Prepared = Box<dyn Iterator<Item = Keyed> + Send>;

/// The messages `produce` was asked to send when they are prepared ahead:
/// a ratings file replayed, or generated requests (`None`: stdin's lines).
fn prepared(args: &ProduceArgs) -> anyhow::Result<Option<Prepared>> {
    Ok(match (args.uids, &args.ratings) {
        (_, Some(path)) => {
            let events = rating_events(path, args.skip, args.limit)?;
            eprintln!(
                "replaying {} rating events from {} in timestamp order",
                events.len(),
                path.display()
            );
            Some(Box::new(events.into_iter()))
        }
        (Some((first_uid, last_uid)), None) => {
            let load = Load {
                first_uid,
                last_uid,
                count: args.count,
                id_prefix: args.id_prefix.clone(),
            };
            let rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            Some(Box::new(load.requests(rng)))
        }
        (None, None) => None,
    })
}

/// Says what `produce` did; an error when some messages were not delivered.
fn report_produced(report: &tools::ProduceReport, topic: &str) -> anyhow::Result<()> {
    eprintln!(
        "produced {} message(s) to {} in {:.2} s ({:.0}/s){}",
        report.delivered,
        topic,
        report.elapsed.as_secs_f64(),
        report.rate(),
        if report.failed > 0 {
            format!(", {} failed", report.failed)
        } else {
            String::new()
        }
    );
    anyhow::ensure!(
        report.failed == 0,
        "{} message(s) could not be delivered",
        report.failed
    );
    Ok(())
}

/// Runs `recstream produce`.
pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    if is_kinesis(&args.topic) {
        return produce_kinesis(args);
    }
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let settings = args.kafka.require(&format!("--topic {}", args.topic))?;
        let topic = recstream_stream::topics::TopicSpec::new(&args.topic, args.partitions);
        recstream_stream::topics::prepare(&settings, &[topic], args.create_topics, &shutdown)
            .await
            .context("checking the topic")?;
        let report = send(&args, &settings, shutdown)
            .await
            .context("producing")?;
        report_produced(&report, &args.topic)
    })
}

#[cfg(feature = "kinesis")]
fn produce_kinesis(args: ProduceArgs) -> anyhow::Result<()> {
    let messages = prepared(&args)?;
    kinesis::produce(&args, messages)
}

#[cfg(not(feature = "kinesis"))]
fn produce_kinesis(args: ProduceArgs) -> anyhow::Result<()> {
    let _ = &args.kinesis;
    Err(crate::streams::not_built_in("--topic", &args.topic))
}

/// Sends what `produce` was asked to: prepared messages (a ratings file
/// replayed, generated requests), or stdin's lines.
async fn send(
    args: &ProduceArgs,
    settings: &KafkaSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<tools::ProduceReport> {
    Ok(match prepared(args)? {
        Some(messages) => {
            tools::produce_paced(settings, &args.topic, messages, args.rate, shutdown).await?
        }
        None => {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            tools::produce_lines(settings, &args.topic, stdin, shutdown).await?
        }
    })
}

/// Where `consume` writes: stdout, line by line, stopping when the reader
/// goes away (`| head -1`).
struct Lines {
    out: std::io::LineWriter<std::io::StdoutLock<'static>>,
    error: Option<std::io::Error>,
}

impl Lines {
    fn new() -> Lines {
        Lines {
            out: std::io::LineWriter::new(std::io::stdout().lock()),
            error: None,
        }
    }

    /// Prints `printed` as `format` says; `Break` once stdout is gone.
    fn print<T: serde::Serialize>(
        &mut self,
        format: PrintFormat,
        payload: Option<&str>,
        printed: &T,
    ) -> std::ops::ControlFlow<()> {
        let written = match format {
            PrintFormat::Payload => writeln!(self.out, "{}", payload.unwrap_or_default()),
            PrintFormat::Json => {
                writeln!(
                    self.out,
                    "{}",
                    serde_json::to_string(printed).unwrap_or_default()
                )
            }
        };
        match written {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(e) => {
                self.error.get_or_insert(e);
                std::ops::ControlFlow::Break(())
            }
        }
    }

    /// The end of a run that saw `seen` messages of `topic`.
    fn finish(self, seen: u64, topic: &str) -> anyhow::Result<()> {
        match self.error {
            // A closed pipe (| head) is a normal way to stop reading.
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Some(e) => Err(e).context("writing to stdout"),
            None => {
                eprintln!("consumed {seen} message(s) from {topic}");
                Ok(())
            }
        }
    }
}

/// Runs `recstream consume`.
pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    if is_kinesis(&args.topic) {
        return consume_kinesis(args);
    }
    let settings = args.kafka.require(&format!("--topic {}", args.topic))?;
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let start = match (&args.group, args.from_beginning) {
            (Some(group), _) => StartAt::Group(group.clone()),
            (None, true) => StartAt::Beginning,
            (None, false) => StartAt::End,
        };
        let mut lines = Lines::new();
        let seen = tools::consume(
            &settings,
            &args.topic,
            start,
            args.limits(),
            shutdown,
            |message| {
                let printed = tools::Printed::from(message);
                lines.print(args.format, printed.payload.as_deref(), &printed)
            },
        )
        .await
        .context("consuming")?;
        lines.finish(seen, &args.topic)
    })
}

impl ConsumeArgs {
    fn limits(&self) -> ConsumeLimits {
        ConsumeLimits {
            max_messages: self.max_messages,
            idle_timeout: self.idle_timeout,
        }
    }
}

#[cfg(feature = "kinesis")]
fn consume_kinesis(args: ConsumeArgs) -> anyhow::Result<()> {
    kinesis::consume(&args)
}

#[cfg(not(feature = "kinesis"))]
fn consume_kinesis(args: ConsumeArgs) -> anyhow::Result<()> {
    let _ = &args.kinesis;
    Err(crate::streams::not_built_in("--topic", &args.topic))
}
