//! Stage two: turn each message into a reply or a dead letter, on the scoring threads.
//!
//! A batch is handed to a dedicated rayon pool (scoring a user is pure CPU
//! work and must not stall the async reactor) and comes back in the same
//! order. Each batch is scored against one snapshot of the model, so a model
//! swap between batches is atomic from the stream's point of view.

use std::cell::RefCell;
use std::sync::Arc;

use rayon::prelude::*;
use recstream_core::Recommender;
use recstream_core::recommend::Scratch;
use tokio::sync::{mpsc, oneshot};

use super::consume::{Event, Incoming};
use super::context::RebalanceNotice;
use super::{Position, WorkerConfig};
use crate::serving::ServingModel;
use crate::wire::{self, Origin, RejectCode};

/// What to do with each message, from the worker configuration.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub input_topic: String,
    pub default_n: usize,
    pub max_request_bytes: usize,
}

impl From<&WorkerConfig> for Rules {
    fn from(config: &WorkerConfig) -> Self {
        Rules {
            input_topic: config.input_topic.clone(),
            default_n: config.default_n,
            max_request_bytes: config.max_request_bytes,
        }
    }
}

/// Where an output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Destination {
    /// The output topic, with whether the answer was a cold start.
    Reply { cold_start: bool },
    /// The dead-letter topic, with the reason.
    DeadLetter(RejectCode),
}

/// The output for one input message.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub position: Position,
    pub destination: Destination,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub request_timestamp_ms: Option<i64>,
}

/// What the deliver stage receives.
#[derive(Debug, Clone)]
pub(crate) enum Scored {
    Output(Output),
    Rebalance(RebalanceNotice),
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Scores batches until the input channel closes.
pub(crate) async fn run(
    mut batches: mpsc::Receiver<Vec<Event>>,
    scored: mpsc::Sender<Vec<Scored>>,
    model: Arc<ServingModel>,
    pool: rayon::ThreadPool,
    rules: Rules,
) {
    let rules = Arc::new(rules);
    while let Some(batch) = batches.recv().await {
        let (done_tx, done_rx) = oneshot::channel();
        let recommender = model.current();
        let rules = rules.clone();
        pool.spawn(move || {
            let out: Vec<Scored> = batch
                .into_par_iter()
                .map(|event| score_event(event, &recommender, &rules))
                .collect();
            let _ = done_tx.send(out);
        });
        let Ok(out) = done_rx.await else {
            tracing::error!("a scoring thread failed; stopping");
            break;
        };
        if scored.send(out).await.is_err() {
            break;
        }
    }
}

fn score_event(event: Event, recommender: &Recommender, rules: &Rules) -> Scored {
    match event {
        Event::Rebalance(notice) => Scored::Rebalance(notice),
        Event::Message(message) => Scored::Output(score_message(message, recommender, rules)),
    }
}

/// The reply (keyed by uid) or the dead letter (keyed as the input) for one message.
pub(crate) fn score_message(message: Incoming, recommender: &Recommender, rules: &Rules) -> Output {
    let Incoming {
        position,
        key,
        payload,
        timestamp_ms,
    } = message;
    match wire::parse_request(payload.as_deref(), rules.max_request_bytes) {
        Ok(request) => {
            let n = request.n.unwrap_or(rules.default_n);
            let answer = SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
                Ok(mut scratch) => {
                    recommender.recommend_with(request.uid.as_str(), n, &mut scratch)
                }
                Err(_) => recommender.recommend(request.uid.as_str(), n),
            });
            Output {
                position,
                destination: Destination::Reply {
                    cold_start: answer.cold_start,
                },
                key: Some(request.uid.as_str().as_bytes().to_vec()),
                payload: wire::encode_reply(&request, &answer),
                request_timestamp_ms: timestamp_ms,
            }
        }
        Err(rejection) => {
            let origin = Origin {
                topic: &rules.input_topic,
                partition: position.partition,
                offset: position.offset,
            };
            Output {
                position,
                destination: Destination::DeadLetter(rejection.code),
                payload: wire::encode_dead_letter(&rejection, &origin, payload.as_deref()),
                key,
                request_timestamp_ms: timestamp_ms,
            }
        }
    }
}
