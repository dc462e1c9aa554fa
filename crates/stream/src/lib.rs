//! The Kafka streaming layer of recstream: it knows Kafka, and nothing about SGD.
//!
//! A worker consumes recommendation requests from one topic, asks the
//! recommender core for each user's top movies, and produces the replies to
//! another topic, continuously, committing each input only after its reply
//! is acknowledged ([`tracker`]). The pieces:
//!
//! - [`wire`]: the request, reply and dead-letter formats.
//! - [`worker`]: the consume → score → deliver pipeline, with backpressure and
//!   graceful shutdown ([`shutdown`]).
//! - [`serving`]: the model being served, updated in place and swappable
//!   without a pause; [`learner`] feeds it through the [`model_topic`], and
//!   [`publish`] moves batch model files through Kafka; [`retrain`] reads
//!   the ratings topic up to its end for a retrained batch model.
//! - [`kafka`]: client settings (our defaults plus `--kafka` overrides) and logging;
//!   [`delivery`]: which produce errors are retried and which are final.
//! - [`config`]: settings that can never work, refused before anything starts;
//!   [`api_versions`]: asking a broker what it implements before relying on it.
//! - [`metrics`]: Prometheus metrics and health endpoints; `rebalance`: what
//!   a consumer group gives and takes, queued for the loop that reads.
//! - [`topics`] and [`embedded`]: checking and creating topics at start, and an in-process broker
//!   for trying things out, with a watch that warns before it falls behind.
//! - [`tools`]: produce and consume from the command line.
//!
//! Measuring the service (load generation, latency, freshness and
//! throughput probes) is not its job: the `recstream-bench` crate does that
//! from outside, as any Kafka client would.

pub mod api_versions;
pub mod config;
pub mod delivery;
pub mod embedded;
pub mod kafka;
pub mod learner;
pub mod metrics;
pub mod model_topic;
pub mod publish;
mod rebalance;
pub mod retrain;
pub mod serving;
pub mod shutdown;
pub mod tools;
pub mod topics;
pub mod tracker;
pub mod wire;
pub mod worker;
