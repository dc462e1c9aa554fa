//! `recstream produce` and `recstream consume`: the notebook producer and the downstream consumer, as commands.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use recstream_bench::load::{Load, produce_load};
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::tools::{self, ConsumeLimits, StartAt};
use tokio_util::sync::CancellationToken;

use crate::args::{KafkaArgs, runtime};

/// Arguments of `recstream produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,

    /// Topic to write to.
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
    kafka: KafkaArgs,

    /// Topic to read.
    #[arg(long, default_value = "recommendation-events")]
    topic: String,

    /// Start from the oldest message instead of new ones only.
    #[arg(long, conflicts_with = "group")]
    from_beginning: bool,

    /// Read as this consumer group, committing what was read.
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
    /// A JSON object with topic, partition, offset, timestamp, key and payload.
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

/// Runs `recstream produce`.
pub fn produce(args: ProduceArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let settings = args.kafka.settings();
        let topic = recstream_stream::topics::TopicSpec::new(&args.topic, args.partitions);
        recstream_stream::topics::prepare(&settings, &[topic], args.create_topics, &shutdown)
            .await
            .context("checking the topic")?;
        let report = send(&args, &settings, shutdown)
            .await
            .context("producing")?;
        eprintln!(
            "produced {} message(s) to {} in {:.2} s ({:.0}/s){}",
            report.delivered,
            args.topic,
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
    })
}

/// Sends what `produce` was asked to: a ratings file replayed, generated
/// requests, or stdin's lines.
async fn send(
    args: &ProduceArgs,
    settings: &KafkaSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<tools::ProduceReport> {
    let report = match (args.uids, &args.ratings) {
        (_, Some(path)) => {
            let events = rating_events(path, args.skip, args.limit)?;
            eprintln!(
                "replaying {} rating events from {} in timestamp order",
                events.len(),
                path.display()
            );
            tools::produce_paced(
                settings,
                &args.topic,
                events.into_iter(),
                args.rate,
                shutdown,
            )
            .await?
        }
        (Some((first_uid, last_uid)), None) => {
            let load = Load {
                first_uid,
                last_uid,
                rate: args.rate,
                count: args.count,
                id_prefix: args.id_prefix.clone(),
            };
            produce_load(settings, &args.topic, &load, shutdown).await?
        }
        (None, None) => {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            tools::produce_lines(settings, &args.topic, stdin, shutdown).await?
        }
    };
    Ok(report)
}

/// Runs `recstream consume`.
pub fn consume(args: ConsumeArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let start = match (&args.group, args.from_beginning) {
            (Some(group), _) => StartAt::Group(group.clone()),
            (None, true) => StartAt::Beginning,
            (None, false) => StartAt::End,
        };
        let limits = ConsumeLimits {
            max_messages: args.max_messages,
            idle_timeout: args.idle_timeout,
        };
        let stdout = std::io::stdout();
        let mut out = std::io::LineWriter::new(stdout.lock());
        let mut write_error = None;
        let seen = tools::consume(
            &args.kafka.settings(),
            &args.topic,
            start,
            limits,
            shutdown,
            |message| {
                let printed = tools::Printed::from(message);
                let line = match args.format {
                    PrintFormat::Payload => printed.payload.unwrap_or_default(),
                    PrintFormat::Json => serde_json::to_string(&printed).unwrap_or_default(),
                };
                match writeln!(out, "{line}") {
                    Ok(()) => std::ops::ControlFlow::Continue(()),
                    Err(e) => {
                        // Nobody reads any more (`| head -1`): stop.
                        write_error.get_or_insert(e);
                        std::ops::ControlFlow::Break(())
                    }
                }
            },
        )
        .await
        .context("consuming")?;
        match write_error {
            // A closed pipe (| head) is a normal way to stop reading.
            Some(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Some(e) => Err(e).context("writing to stdout"),
            None => {
                eprintln!("consumed {seen} message(s) from {}", args.topic);
                Ok(())
            }
        }
    })
}
