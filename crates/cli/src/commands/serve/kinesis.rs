//! `recstream serve --input-topic kinesis:STREAM`: requests from a Kinesis
//! stream, replies and dead letters on Kinesis or Kafka, the model followed
//! on Kafka unless `--no-follow`.
//!
//! Everything is checked before the first request is read: the stream
//! names, that Kafka is given when anything lives there, that each stream
//! and topic exists (or is created with `--create-topics`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use recstream_kinesis::outputs::Target;
use recstream_kinesis::streams::{self, StreamUse};
use recstream_kinesis::worker::{self as kinesis_worker, KinesisWorkerConfig, ModelTopic};
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::metrics::Health;
use recstream_stream::topics::{self, TopicSpec};

use super::{DEFAULT_FILES_TOPIC, ServeArgs, load_model, model_topics, start_metrics};
use crate::args::runtime;
use crate::streams::{Channel, channel, is_kinesis, stream_name};

/// Runs the Kinesis worker.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args)?;
    let model = load_model(&args.model)?;
    runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let client = args.kinesis.settings().client().await?;
        streams::prepare(
            &client,
            &plan.kinesis_streams,
            args.create_topics,
            args.partitions,
        )
        .await
        .context("checking the Kinesis streams")?;
        if let Some(kafka) = &plan.kafka {
            topics::prepare(kafka, &plan.kafka_topics, args.create_topics, &shutdown)
                .await
                .context("checking the Kafka topics")?;
        }
        let health = Arc::new(Health::default());
        start_metrics(args.worker.metrics_addr, health.clone(), &shutdown).await?;
        let summary = kinesis_worker::run(plan.config, model, health, shutdown)
            .await
            .context("running the Kinesis worker")?;
        tracing::info!(
            requests = summary.requests,
            replies = summary.replies,
            dead_letters = summary.dead_letters,
            "Kinesis worker stopped"
        );
        Ok(())
    })
}

/// What the flags ask for, checked.
struct Plan {
    config: KinesisWorkerConfig,
    kinesis_streams: Vec<StreamUse>,
    kafka: Option<KafkaSettings>,
    kafka_topics: Vec<TopicSpec>,
}

impl Plan {
    fn new(args: &ServeArgs) -> anyhow::Result<Plan> {
        let worker = &args.worker;
        anyhow::ensure!(
            !worker.exactly_once,
            "--exactly-once needs Kafka requests: Kinesis has no transactions, so the Kinesis worker is at least once (a restart may answer the requests after the last checkpoint again)"
        );
        let input = stream_name("--input-topic", &worker.input_topic)?;
        let outputs = [
            ("--output-topic", worker.output_topic.as_str(), "replies"),
            ("--dlq-topic", worker.dlq_topic.as_str(), "dead letters"),
        ];
        // Kafka is needed for the outputs on Kafka and the model topic.
        let mut on_kafka: Vec<String> = outputs
            .iter()
            .filter(|(_, value, _)| !is_kinesis(value))
            .map(|(flag, value, _)| format!("{flag} {value}"))
            .collect();
        if !worker.no_follow {
            on_kafka.push(format!(
                "the model topic {} (pass --no-follow to serve the model file as it is)",
                worker.model_topic
            ));
        }
        let kafka = match on_kafka.is_empty() {
            true => None,
            false => Some(args.kafka.require(&on_kafka.join("; "))?),
        };

        let mut kinesis_streams = vec![StreamUse {
            stream: input.clone(),
            role: "requests",
        }];
        let mut kafka_topics = Vec::new();
        let mut target = |(flag, value, role): (&str, &str, &'static str)| {
            Ok::<_, anyhow::Error>(match (channel(value), &kafka) {
                (Channel::Kinesis(_), _) => {
                    let stream = stream_name(flag, value)?;
                    kinesis_streams.push(StreamUse {
                        stream: stream.clone(),
                        role,
                    });
                    Target::Kinesis(stream)
                }
                (Channel::Kafka(topic), Some(settings)) => {
                    kafka_topics.push(TopicSpec::new(topic, args.partitions));
                    Target::Kafka {
                        settings: settings.clone(),
                        topic: topic.to_string(),
                    }
                }
                (Channel::Kafka(_), None) => {
                    anyhow::bail!("{flag} {value} is on Kafka: give --brokers")
                }
            })
        };
        let replies = target(outputs[0])?;
        let dead_letters = target(outputs[1])?;
        if !worker.no_follow {
            kafka_topics.extend(model_topics(
                &worker.model_topic,
                args.partitions,
                DEFAULT_FILES_TOPIC,
            ));
        }
        let mut config =
            KinesisWorkerConfig::new(args.kinesis.settings(), &input, replies, dead_letters);
        if let Some(path) = &args.kinesis_input.kinesis_checkpoint {
            config.checkpoint = path.clone();
        }
        config.first_start = args.kinesis_input.kinesis_start.into();
        config.default_n = usize::from(worker.n);
        config.max_request_bytes = worker.max_request_bytes;
        config.max_in_flight = worker.max_in_flight;
        if let Some(threads) = worker.scoring_threads {
            config.scoring_threads = threads.max(1);
        }
        config.poll = args.kinesis_input.kinesis_poll;
        config.drain_timeout = Duration::from_secs(worker.drain_timeout);
        config.follow = match (&kafka, worker.no_follow) {
            (Some(kafka), false) => Some(ModelTopic {
                kafka: kafka.clone(),
                topic: worker.model_topic.clone(),
            }),
            _ => None,
        };
        Ok(Plan {
            config,
            kinesis_streams,
            kafka,
            kafka_topics,
        })
    }
}
