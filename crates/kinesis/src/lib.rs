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
//! - `error`, `backoff` and `metrics`: how failures are met, and what is
//!   reported.

pub mod backoff;
pub mod checkpoint;
pub mod client;
pub mod error;
pub mod lineage;
pub mod listing;
pub mod metrics;
pub mod reader;
pub mod sink;

pub use client::KinesisSettings;
