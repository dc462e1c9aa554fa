//! `produce` and `consume` on a Kinesis stream (`--topic kinesis:STREAM`).

use anyhow::Context;
use recstream_kinesis::lineage::FirstStart;
use recstream_kinesis::streams::{self, StreamUse};
use recstream_kinesis::tools;

use super::{ConsumeArgs, Lines, Prepared, ProduceArgs, report_produced};
use crate::args::runtime;
use crate::streams::{Channel, channel};

/// The stream a `--topic kinesis:STREAM` names.
fn stream(topic: &str) -> &str {
    match channel(topic) {
        Channel::Kinesis(stream) | Channel::Kafka(stream) => stream,
    }
}

/// Sends `messages` (stdin's lines when `None`) to the stream.
pub fn produce(args: &ProduceArgs, messages: Option<Prepared>) -> anyhow::Result<()> {
    let stream = stream(&args.topic);
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let client = args.kinesis.settings().client().await?;
        let used = [StreamUse {
            stream: stream.to_string(),
            role: "to write",
        }];
        streams::prepare(&client, &used, args.create_topics, args.partitions)
            .await
            .context("checking the stream")?;
        let report = match messages {
            Some(messages) => {
                tools::produce_paced(&client, stream, messages, args.rate, shutdown).await
            }
            None => {
                let stdin = tokio::io::BufReader::new(tokio::io::stdin());
                tools::produce_lines(&client, stream, stdin, shutdown).await
            }
        };
        report_produced(&report, &args.topic)
    })
}

/// Prints the stream's records.
pub fn consume(args: &ConsumeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.group.is_none(),
        "--group: Kinesis has no consumer groups; consume reads every shard, from the oldest record with --from-beginning"
    );
    let stream = stream(&args.topic);
    let start = match args.from_beginning {
        true => FirstStart::TrimHorizon,
        false => FirstStart::Latest,
    };
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let client = args.kinesis.settings().client().await?;
        let mut lines = Lines::new();
        let seen = tools::consume(&client, stream, start, args.limits(), shutdown, |record| {
            lines.print(args.format, Some(&record.payload), record)
        })
        .await
        .context("consuming")?;
        lines.finish(seen, &args.topic)
    })
}
