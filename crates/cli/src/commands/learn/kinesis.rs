//! `learn --ratings-topic kinesis:STREAM`: the relay that puts the stream's
//! ratings on the Kafka ratings topic, run beside the learner; the first to
//! fail stops the other.

use std::future::Future;

use anyhow::Context;
use recstream_kinesis::relay::{self, RelayConfig};
use recstream_stream::learner::{LearnerError, LearnerSummary};
use tokio_util::sync::CancellationToken;

use super::LearnArgs;
use crate::streams::stream_name;

/// The relay `args` ask for, from `stream` (`kinesis:NAME`) to the topic
/// the learner reads.
pub fn relay(args: &LearnArgs, stream: &str) -> anyhow::Result<RelayConfig> {
    let name = stream_name("--ratings-topic", stream)?;
    let mut config = RelayConfig::new(
        args.kinesis.settings(),
        &name,
        args.kafka.settings(),
        &args.relay_topic,
    );
    if let Some(path) = &args.kinesis_input.kinesis_checkpoint {
        config.checkpoint = path.clone();
    }
    config.first_start = args.kinesis_input.kinesis_start.into();
    config.poll = args.kinesis_input.kinesis_poll;
    Ok(config)
}

/// Runs the relay beside `learning` until both stop: a relay that fails
/// stops the learner (which drains first), and the relay stops when the
/// learner does.
pub async fn beside_relay(
    config: RelayConfig,
    learning: impl Future<Output = Result<LearnerSummary, LearnerError>>,
    shutdown: &CancellationToken,
) -> anyhow::Result<LearnerSummary> {
    let stop_relay = shutdown.child_token();
    let mut relaying = tokio::spawn(relay::run(config, stop_relay.clone()));
    tokio::pin!(learning);
    let (learnt, relayed) = tokio::select! {
        learnt = &mut learning => {
            stop_relay.cancel();
            (learnt, (&mut relaying).await)
        }
        relayed = &mut relaying => {
            // The learner stops too, after what it holds.
            shutdown.cancel();
            (learning.await, relayed)
        }
    };
    match relayed.context("the relay task")? {
        Ok(summary) => tracing::info!(
            read = summary.read,
            relayed = summary.relayed,
            already_there = summary.already_there,
            "relay stopped"
        ),
        Err(e) => return Err(e).context("relaying ratings from Kinesis"),
    }
    learnt.context("learning")
}
