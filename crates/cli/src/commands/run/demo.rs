//! `recstream run --demo`: a short script against the running service.
//!
//! It sends sample requests (one of them invalid) and prints the replies and
//! the dead letter; with a learner, user 196 then rates their top movie one
//! star and the script asks again until that movie is gone from the answer,
//! which shows a rating reaching the worker live. Every message it sends
//! carries a marker unique to this run, so replies left on the topics by an
//! earlier run are never mistaken for this one's.

use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::Context;
use rdkafka::message::Message;
use recstream_stream::kafka::KafkaSettings;
use recstream_stream::tools::{self, ConsumeLimits, StartAt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::RunArgs;
use crate::output::out;

/// How long the demo waits for the replies it asked for.
const REPLY_WAIT: Duration = Duration::from_secs(30);

/// Runs the demo script.
pub(super) async fn run(
    settings: &KafkaSettings,
    args: &RunArgs,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let demo = Demo {
        settings,
        args,
        marker: format!("demo-{}-", rand::random::<u32>()),
        shutdown,
    };
    let mut replies = Replies::read(&demo);
    let answered = demo.ask_samples(&mut replies).await?;
    demo.show_dead_letter().await?;
    if args.learns()
        && let Some(first) = answered.iter().find(|r| r["uid"] == 196)
    {
        demo.show_learning(first, &mut replies).await?;
    }
    replies.stop().await;
    Ok(())
}

/// What every step of the script needs.
struct Demo<'a> {
    settings: &'a KafkaSettings,
    args: &'a RunArgs,
    /// Prefix of this run's request ids.
    marker: String,
    shutdown: CancellationToken,
}

impl Demo<'_> {
    /// Sends the sample requests and prints the replies to the valid ones.
    async fn ask_samples(&self, replies: &mut Replies) -> anyhow::Result<Vec<Value>> {
        let requests = [
            (r#""uid": 196, "n": 5"#, "1"),
            (r#""uid": "186", "n": 3"#, "2"),
            (r#""uid": 424242, "n": 3"#, "3"),
            (r#""user": 196"#, "4"),
        ];
        let lines: Vec<String> = requests
            .iter()
            .map(|(body, n)| format!(r#"{{{body}, "request_id": "{}{n}"}}"#, self.marker))
            .collect();
        let topic = &self.args.worker.input_topic;
        out!(
            "\nDemo: sending {} requests to {topic} (the last one is invalid)",
            lines.len()
        );
        for line in &lines {
            out!("  > {line}");
        }
        self.send(topic, lines)
            .await
            .context("sending the demo requests")?;
        let ids: Vec<String> = (1..=3).map(|n| format!("{}{n}", self.marker)).collect();
        let answered = replies.wait_for(&ids).await;
        for reply in &answered {
            print_reply(reply)?;
        }
        Ok(answered)
    }

    /// Prints the dead letter of the invalid request.
    async fn show_dead_letter(&self) -> anyhow::Result<()> {
        let topic = &self.args.worker.dlq_topic;
        if let Some(letter) = self.read_dead_letter(topic).await? {
            out!("\n  dead letter on {topic}: {letter}");
        }
        Ok(())
    }

    /// User 196 rates their top recommendation one star; asks again until
    /// the answer no longer holds it.
    async fn show_learning(&self, first: &Value, replies: &mut Replies) -> anyhow::Result<()> {
        let Some(top) = first["recommendations"][0].as_object() else {
            return Ok(());
        };
        let (iid, title) = (top["iid"].clone(), top["title"].as_str().unwrap_or("?"));
        out!(
            "\nOnline learning: user 196 watches their top recommendation, {title}, and rates it 1 star"
        );
        let rating = format!(r#"{{"uid": 196, "iid": {iid}, "rating": 1}}"#);
        let ratings_topic = &self.args.learner.ratings_topic;
        out!("  > {rating}   (to {ratings_topic}, keyed by its uid)");
        // Keyed by the user, as the learners require when the ratings topic
        // has several partitions: the rating reaches the one that owns 196.
        let keyed = std::iter::once((Some(b"196".to_vec()), rating.into_bytes()));
        tools::produce_paced(
            self.settings,
            ratings_topic,
            keyed,
            None,
            self.shutdown.clone(),
        )
        .await
        .context("sending the demo rating")?;
        for attempt in 5..25 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let id = format!("{}{attempt}", self.marker);
            let request = format!(r#"{{"uid": 196, "n": 5, "request_id": "{id}"}}"#);
            self.send(&self.args.worker.input_topic, vec![request])
                .await?;
            let Some(reply) = replies.wait_for(std::slice::from_ref(&id)).await.pop() else {
                continue;
            };
            let gone = reply["recommendations"]
                .as_array()
                .is_some_and(|recs| recs.iter().all(|r| r["iid"] != iid));
            if gone {
                print_reply(&reply)?;
                out!("\n  {title} is no longer recommended: the rating reached the worker live.");
                break;
            }
        }
        Ok(())
    }

    /// Sends one message per line to `topic`.
    async fn send(&self, topic: &str, lines: Vec<String>) -> anyhow::Result<()> {
        let input = tokio::io::BufReader::new(std::io::Cursor::new(lines.join("\n").into_bytes()));
        tools::produce_lines(self.settings, topic, input, self.shutdown.clone()).await?;
        Ok(())
    }

    /// The first dead letter on `topic` whose payload carries this run's marker.
    async fn read_dead_letter(&self, topic: &str) -> anyhow::Result<Option<String>> {
        let mut found = None;
        let limits = ConsumeLimits {
            max_messages: None,
            idle_timeout: Some(Duration::from_secs(20)),
        };
        let stop = self.shutdown.child_token();
        tools::consume(
            self.settings,
            topic,
            StartAt::Beginning,
            limits,
            stop,
            |message| match message.payload_view::<str>().and_then(Result::ok) {
                Some(payload) if payload.contains(&self.marker) => {
                    found = Some(payload.to_string());
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            },
        )
        .await
        .context("reading the dead letters")?;
        Ok(found)
    }
}

/// This run's replies, read in the background from the reply topic.
struct Replies {
    received: mpsc::UnboundedReceiver<Value>,
    stop: CancellationToken,
    reader: tokio::task::JoinHandle<()>,
}

impl Replies {
    /// Starts reading the reply topic from its beginning.
    fn read(demo: &Demo<'_>) -> Self {
        let (sender, received) = mpsc::unbounded_channel();
        let stop = demo.shutdown.child_token();
        let (settings, topic, marker, until) = (
            demo.settings.clone(),
            demo.args.worker.output_topic.clone(),
            demo.marker.clone(),
            stop.clone(),
        );
        let reader = tokio::spawn(async move {
            let ours = |message: &rdkafka::message::OwnedMessage| {
                let reply = message
                    .payload_view::<str>()
                    .and_then(Result::ok)
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())?;
                let id = reply["request_id"].as_str()?;
                id.starts_with(&marker).then_some(reply)
            };
            let read = tools::consume(
                &settings,
                &topic,
                StartAt::Beginning,
                ConsumeLimits::default(),
                until,
                |message| {
                    if let Some(reply) = ours(message) {
                        let _ = sender.send(reply);
                    }
                    ControlFlow::Continue(())
                },
            );
            if let Err(e) = read.await {
                tracing::warn!("demo: reading the replies failed: {e}");
            }
        });
        Replies {
            received,
            stop,
            reader,
        }
    }

    /// The replies to `ids` that arrive within [`REPLY_WAIT`].
    async fn wait_for(&mut self, ids: &[String]) -> Vec<Value> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + REPLY_WAIT;
        while got.len() < ids.len() {
            match tokio::time::timeout_at(deadline, self.received.recv()).await {
                Ok(Some(reply)) if ids.iter().any(|id| reply["request_id"] == id.as_str()) => {
                    got.push(reply)
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        got
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.reader.await;
    }
}

fn print_reply(reply: &Value) -> std::io::Result<()> {
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
