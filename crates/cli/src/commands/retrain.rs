//! `recstream retrain`: a new batch model from the base ratings file plus
//! every rating on the ratings topic so far, published so that learners and
//! workers switch to it; once, or on a schedule with `--every`.
//!
//! Each round records where each partition of the ratings topic ends,
//! reads the ratings up to there (only the new ones, with `--archive`),
//! trains on the file plus those ratings, and publishes the model with the
//! recorded ends in its announcement. Learners then learn, on top of the
//! new model, only the ratings after the ends, read again from the topic:
//! none is lost and none counted twice. The streaming layer does the
//! reading and publishing; this module wires it to the core's training.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::retrain::{Archive, CollectOptions, Collected, collect};
use tokio_util::sync::CancellationToken;

use super::train::{FitArgs, train_model_with};
use crate::output::out;

/// Arguments of `recstream retrain`.
#[derive(Debug, Args)]
pub struct RetrainArgs {
    /// The base ratings (--ratings), titles, hyper-parameters, and where the model goes (--out).
    #[command(flatten)]
    pub fit: FitArgs,

    #[command(flatten)]
    pub kafka: crate::args::KafkaArgs,

    /// The ratings topic the learners learn from.
    #[arg(long, default_value = "rating-events")]
    pub ratings_topic: String,

    #[command(flatten)]
    pub topics: super::model::PublishTopics,

    /// Folder that keeps the ratings read so far, so that each retrain reads only the new ones (the topic's retention then need only outlast the time between retrains). Without it every retrain reads the whole topic.
    #[arg(long)]
    pub archive: Option<PathBuf>,

    /// Retrain every DURATION (e.g. 6h, 90m) until stopped; without it, once.
    #[arg(long, value_name = "DURATION", value_parser = every)]
    pub every: Option<Duration>,

    /// Train without ratings the topic's retention deleted before a retrain read them (refused otherwise).
    #[arg(long)]
    pub skip_lost_ratings: bool,
}

/// Parses `--every`: a human duration of at least a second.
fn every(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if duration < Duration::from_secs(1) {
        return Err(format!("{text} is shorter than a second"));
    }
    Ok(duration)
}

/// Runs `recstream retrain`.
pub fn run(args: RetrainArgs) -> anyhow::Result<()> {
    crate::args::runtime()?.block_on(async {
        let shutdown = recstream_stream::shutdown::on_signals();
        let settings = args.kafka.settings();
        let mut archive = match &args.archive {
            Some(dir) => Some(
                Archive::open(dir, &args.ratings_topic)
                    .with_context(|| format!("opening the archive {}", dir.display()))?,
            ),
            None => None,
        };
        loop {
            let started = tokio::time::Instant::now();
            match round(&args, &settings, archive.as_mut(), &shutdown).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) if args.every.is_some() => {
                    tracing::error!(
                        "this retrain failed: {}; the next one runs as scheduled",
                        crate::output::one_line(&e)
                    );
                }
                Err(e) => return Err(e),
            }
            let Some(every) = args.every else {
                return Ok(());
            };
            tracing::info!(next_in = %humantime::format_duration(every), "waiting for the next retrain");
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep_until(started + every) => {}
            }
        }
    })
}

/// One retrain: collect, train, publish. `false` when `shutdown` came first.
async fn round(
    args: &RetrainArgs,
    settings: &KafkaSettings,
    archive: Option<&mut Archive>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let options = CollectOptions {
        ratings_topic: args.ratings_topic.clone(),
        max_rating_bytes: recstream_stream::wire::DEFAULT_MAX_REQUEST_BYTES,
        skip_lost: args.skip_lost_ratings,
    };
    let Some(collected) = collect(settings, &options, archive, shutdown)
        .await
        .with_context(|| format!("reading the ratings of {:?}", args.ratings_topic))?
    else {
        return Ok(false);
    };
    let Collected {
        ratings,
        read,
        refused,
        lost,
        covers,
    } = collected;
    let fit = args.fit.clone();
    let ends = positions(&covers.next);
    let topic = args.ratings_topic.clone();
    // Training cannot be interrupted; a stop asked meanwhile waits for it
    // and for the publication, so that the round is not wasted.
    let (model, out_of_scale) = tokio::task::spawn_blocking(move || {
        let mut out_of_scale = 0u64;
        let model = train_model_with(&fit, |data, scale| {
            let mut added = 0u64;
            for rating in &ratings {
                // The learners refuse these too: the model must not hold them.
                if scale.contains(rating.rating) {
                    data.push(
                        rating.uid.as_str(),
                        rating.iid.as_str(),
                        rating.rating,
                        rating.ts,
                    );
                    added += 1;
                } else {
                    out_of_scale += 1;
                }
            }
            format!("{added} ratings of {topic} before {ends}")
        })?;
        anyhow::Ok((model, out_of_scale))
    })
    .await
    .context("the training task failed")??;
    // Published even when a stop was asked during the training: the round
    // finishes rather than waste it.
    let announcement = super::model::publish_async(
        &args.fit.out,
        settings,
        &args.topics,
        Some(covers.clone()),
        &CancellationToken::new(),
    )
    .await?;
    if !args.fit.quiet {
        let refused: u64 = refused.values().sum::<u64>() + out_of_scale;
        out!(
            "retrained model {} on {} ratings: {} read from {} this time ({} refused as the learners refuse them{}); learners resume {} at {}",
            announcement.id,
            model.meta.n_ratings,
            read,
            args.ratings_topic,
            refused,
            if lost > 0 {
                format!(", {lost} lost to retention and skipped")
            } else {
                String::new()
            },
            args.ratings_topic,
            positions(&covers.next),
        );
    }
    Ok(true)
}

/// Positions as `0:120 1:98`.
fn positions(next: &BTreeMap<i32, i64>) -> String {
    next.iter()
        .map(|(p, o)| format!("{p}:{o}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_reads_human_durations_and_refuses_nonsense() {
        assert_eq!(every("6h"), Ok(Duration::from_secs(6 * 3600)));
        assert_eq!(every("90m"), Ok(Duration::from_secs(90 * 60)));
        assert!(every("0s").is_err());
        assert!(every("500ms").is_err());
        assert!(every("soon").is_err());
    }

    #[test]
    fn positions_print_partition_by_partition() {
        assert_eq!(
            positions(&BTreeMap::from([(0, 120), (1, 98)])),
            "0:120 1:98"
        );
    }
}
