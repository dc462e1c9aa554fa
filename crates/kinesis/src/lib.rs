//! Amazon Kinesis as a stream recstream reads requests and ratings from and
//! writes replies to, beside Kafka, which stays the main path (and the only
//! one for model updates).
//!
//! It knows Kinesis and nothing about scoring or SGD. The pieces, each
//! testable against a local Kinesis server:
//!
//! - `client`: the official SDK client, from the standard AWS chain or a
//!   `--kinesis-endpoint`;
//! - `listing` and `lineage`: a stream's shards, and which to read now
//!   (parents to their end before their children);
//! - `reader`: one shard read in order within Kinesis's limits (5 reads a
//!   second, throttling backed off, expired iterators renewed);
//! - `sink`: PutRecords batches that keep each key's order and retry only
//!   the failed entries;
//! - `checkpoint`: where each shard was acknowledged to, in a locked file;
//! - `ledger`: the shards being read, and how far each is done (the
//!   checkpoint rule);
//! - `streams`: the streams a command uses, checked (or created) at start;
//! - `worker`: `serve` on Kinesis, scoring with the Kafka worker's scorer,
//!   replying through `outputs` (a Kinesis stream or a Kafka topic);
//! - `relay`: ratings from a stream onto the Kafka ratings topic, once each;
//! - `tools`: `produce` and `consume` on a stream;
//! - `error`, `backoff` and `metrics`: how failures are met, and what is
//!   reported.

pub mod backoff;
pub mod checkpoint;
pub mod client;
pub mod error;
pub mod ledger;
pub mod lineage;
pub mod listing;
pub mod metrics;
pub mod outputs;
pub mod reader;
pub mod relay;
pub mod sink;
pub mod streams;
pub mod tools;
pub mod worker;

/// The SDK, for callers that hold its client (tests, tools).
pub use aws_sdk_kinesis;
pub use client::KinesisSettings;

/// Helpers for the tests that script the SDK's answers.
#[cfg(test)]
mod scripted {
    use aws_smithy_types::error::ErrorMetadata;

    /// The SDK retries throttling by itself (three tries); the scripted
    /// tests give every answer, so the retries they see are only ours.
    pub fn no_sdk_retries(
        config: aws_sdk_kinesis::config::Builder,
    ) -> aws_sdk_kinesis::config::Builder {
        config.retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
    }

    /// Error metadata with the code Kinesis sends (`__type`), as the SDK
    /// reads it from a real response.
    pub fn coded(code: &str) -> ErrorMetadata {
        ErrorMetadata::builder().code(code).build()
    }
}
