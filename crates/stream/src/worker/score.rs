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
use recstream_core::recommend::{JsonAnswer, JsonAnswers, Scratch};
use tokio::sync::{mpsc, oneshot};

use super::consume::{Event, Incoming};
use super::context::RebalanceNotice;
use super::{Position, WorkerConfig};
use crate::serving::ServingModel;
use crate::wire::{self, Origin, RejectCode};

/// What to do with each message, from the worker configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    /// The input's name, as dead letters give it.
    pub input_topic: String,
    /// Recommendations per reply when the request does not say.
    pub default_n: usize,
    /// Requests larger than this are dead-lettered.
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
pub enum Destination {
    /// The output topic, with whether the answer was a cold start.
    Reply {
        /// Whether the answer was the cold-start list.
        cold_start: bool,
    },
    /// The dead-letter topic, with the reason.
    DeadLetter(RejectCode),
}

/// The output for one input message.
#[derive(Debug, Clone)]
pub struct Output {
    /// The input message's place.
    pub position: Position,
    /// Reply or dead letter.
    pub destination: Destination,
    /// Its key (a reply's is the uid).
    pub key: Option<Vec<u8>>,
    /// Its bytes.
    pub payload: Vec<u8>,
    /// The request's timestamp, for latency metrics.
    pub request_timestamp_ms: Option<i64>,
}

/// What the deliver stage receives.
/// What scoring gives for each event, in order.
#[derive(Debug, Clone)]
pub enum Scored {
    /// A reply or a dead letter.
    Output(Output),
    /// A rebalance notice, passed through in its place.
    Rebalance(RebalanceNotice),
}

thread_local! {
    static SCRATCH: RefCell<ChunkScratch> = RefCell::new(ChunkScratch::default());
}

/// The scoring side of a worker: its thread pool, the model it serves and
/// the rules for each message. Both delivery modes score through one.
pub struct Scorer {
    pool: rayon::ThreadPool,
    model: Arc<ServingModel>,
    rules: Arc<Rules>,
}

/// The scoring thread pool could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start {threads} scoring threads: {source}")]
pub struct ScoringThreadsError {
    threads: usize,
    #[source]
    source: rayon::ThreadPoolBuildError,
}

impl Scorer {
    /// Starts `config.scoring_threads` threads named `recstream-score-N`.
    pub(crate) fn start(
        config: &WorkerConfig,
        model: Arc<ServingModel>,
    ) -> Result<Self, ScoringThreadsError> {
        Scorer::new(config.scoring_threads, model, Rules::from(config))
    }

    /// Starts `threads` scoring threads serving `model` by `rules`.
    pub fn new(
        threads: usize,
        model: Arc<ServingModel>,
        rules: Rules,
    ) -> Result<Self, ScoringThreadsError> {
        let threads = threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("recstream-score-{i}"))
            .build()
            .map_err(|source| ScoringThreadsError { threads, source })?;
        Ok(Scorer {
            pool,
            model,
            rules: Arc::new(rules),
        })
    }

    /// Scores a batch on the pool against one model state; `None` if the
    /// pool failed.
    pub async fn score(&self, batch: Vec<Event>) -> Option<Vec<Scored>> {
        let (done_tx, done_rx) = oneshot::channel();
        let current = self.model.current();
        let model = self.model.clone();
        let rules = self.rules.clone();
        self.pool.spawn(move || {
            // One model state for the whole batch; online updates wait for it.
            let recommender = crate::serving::read(&current);
            let out = score_batch(batch, &recommender, &rules, &model);
            drop(recommender);
            let _ = done_tx.send(out);
        });
        done_rx.await.ok()
    }
}

/// Stage two: scores batches until the input channel closes.
pub(crate) async fn run(
    mut batches: mpsc::Receiver<Vec<Event>>,
    scored: mpsc::Sender<Vec<Scored>>,
    scorer: Scorer,
) {
    while let Some(batch) = batches.recv().await {
        let Some(out) = scorer.score(batch).await else {
            tracing::error!("a scoring thread failed; stopping");
            break;
        };
        if scored.send(out).await.is_err() {
            break;
        }
    }
}

/// Scores a batch, in parallel over the pool's threads, keeping its order.
fn score_batch(
    batch: Vec<Event>,
    recommender: &Recommender,
    rules: &Rules,
    model: &ServingModel,
) -> Vec<Scored> {
    // Requests in chunks that share passes over the item factors: as large
    // as the batch allows while every pool thread gets a chunk (a lone
    // request is a chunk of one, scored at once).
    let size = batch
        .len()
        .div_ceil(rayon::current_num_threads().max(1))
        .clamp(1, CHUNK);
    let scored: Vec<Vec<Scored>> = into_chunks(batch, size)
        .into_par_iter()
        .map(|chunk| score_chunk(chunk, recommender, rules, model))
        .collect();
    scored.into_iter().flatten().collect()
}

fn into_chunks<T>(items: Vec<T>, size: usize) -> Vec<Vec<T>> {
    let mut chunks = Vec::with_capacity(items.len().div_ceil(size));
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        chunks.push(items.by_ref().take(size).collect());
    }
    chunks
}

/// Most requests scored together on one thread: grouped scoring gains
/// little past this (`recstream bench topn`: groups of 32 and 128 cost the
/// same per request at ML-100K size), and smaller chunks spread a batch
/// over every core.
const CHUNK: usize = 64;

/// Scores a chunk of events in order: rebalance notices pass through, valid
/// requests are answered together, invalid ones become dead letters.
fn score_chunk(
    events: Vec<Event>,
    recommender: &Recommender,
    rules: &Rules,
    model: &ServingModel,
) -> Vec<Scored> {
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => score_chunk_with(&events, recommender, rules, model, &mut scratch),
        Err(_) => score_chunk_with(
            &events,
            recommender,
            rules,
            model,
            &mut ChunkScratch::default(),
        ),
    })
}

/// [`score_chunk`] with the buffers it reuses: requests are read borrowed
/// from the messages, and the answers are written as JSON by the core.
fn score_chunk_with(
    events: &[Event],
    recommender: &Recommender,
    rules: &Rules,
    model: &ServingModel,
    scratch: &mut ChunkScratch,
) -> Vec<Scored> {
    let parsed: Vec<Parsed<'_>> = events
        .iter()
        .map(|event| match event {
            Event::Rebalance(notice) => Parsed::Rebalance(notice),
            Event::Message(message) => Parsed::Message(
                message,
                wire::parse_request(message.payload.as_deref(), rules.max_request_bytes),
            ),
        })
        .collect();
    let asks: Vec<(&str, usize)> = parsed
        .iter()
        .filter_map(|p| match p {
            Parsed::Message(_, Ok(request)) => {
                Some((&*request.uid, request.n.unwrap_or(rules.default_n)))
            }
            _ => None,
        })
        .collect();
    let ChunkScratch { scratch, answers } = scratch;
    recommender.answer_many_json(&asks, scratch, answers);
    let version = recommender.version();
    let mut next = 0;
    parsed
        .iter()
        .map(|p| match p {
            Parsed::Rebalance(notice) => Scored::Rebalance((*notice).clone()),
            Parsed::Message(message, Ok(request)) => {
                let answer = answers.get(next);
                next += 1;
                model.answered(&request.uid);
                Scored::Output(match answer {
                    Some(answer) => reply(message, request, answer, version),
                    // One answer per request is written; should that ever
                    // fail, the request is answered alone.
                    None => {
                        let mut one = JsonAnswers::default();
                        let ask = (&*request.uid, request.n.unwrap_or(rules.default_n));
                        recommender.answer_many_json(&[ask], &mut Scratch::default(), &mut one);
                        let empty = JsonAnswer {
                            recommendations: b"[]",
                            cold_start: true,
                        };
                        reply(message, request, one.get(0).unwrap_or(empty), version)
                    }
                })
            }
            Parsed::Message(message, Err(rejection)) => {
                Scored::Output(dead_letter(message, rejection, rules))
            }
        })
        .collect()
}

/// The buffers a scoring thread reuses from chunk to chunk.
#[derive(Debug, Default)]
struct ChunkScratch {
    scratch: Scratch,
    answers: JsonAnswers,
}

/// An event of a chunk, its request read.
enum Parsed<'a> {
    Rebalance(&'a RebalanceNotice),
    Message(&'a Incoming, Result<wire::Request<'a>, wire::Rejection>),
}

/// The reply to a valid request, keyed by its uid.
fn reply(
    message: &Incoming,
    request: &wire::Request<'_>,
    answer: JsonAnswer<'_>,
    version: &str,
) -> Output {
    // Room for the envelope around the answer, so the payload is allocated once.
    let room = answer.recommendations.len()
        + request.uid.len()
        + request.request_id.as_ref().map_or(0, |id| id.len())
        + version.len()
        + 96;
    let mut payload = Vec::with_capacity(room);
    wire::write_reply(
        &mut payload,
        request,
        answer.recommendations,
        version,
        answer.cold_start,
    );
    Output {
        position: message.position,
        destination: Destination::Reply {
            cold_start: answer.cold_start,
        },
        key: Some(request.uid.as_bytes().to_vec()),
        payload,
        request_timestamp_ms: message.timestamp_ms,
    }
}

/// The dead letter for an invalid message, keyed as the message was.
fn dead_letter(message: &Incoming, rejection: &wire::Rejection, rules: &Rules) -> Output {
    let origin = Origin {
        topic: &rules.input_topic,
        partition: message.position.partition,
        offset: message.position.offset,
    };
    Output {
        position: message.position,
        destination: Destination::DeadLetter(rejection.code),
        payload: wire::encode_dead_letter(rejection, &origin, message.payload.as_deref()),
        key: message.key.clone(),
        request_timestamp_ms: message.timestamp_ms,
    }
}
