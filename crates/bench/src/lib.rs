//! The benchmark harness of recstream: it measures the service from beside it, never from inside.
//!
//! Everything here is a client. The streaming probes talk to a running
//! worker and learner only through Kafka, as users' programs would, so the
//! figures include everything a user pays for (client batching, the broker,
//! the network) and the service library carries no code that exists only
//! to be measured. The core benchmarks call the recommender core's public
//! API in this process. Each benchmark states what it compares against:
//! one number from a shared 2-core machine means little on its own.
//!
//! - [`topn`] (`recstream bench topn`): top-N requests one at a time,
//!   against scoring every item and sorting them all, alternated in blocks
//!   in the same run; plus 64 requests answered together, as the worker does.
//! - [`train`] (`recstream bench train`): whole training runs with peak
//!   memory; the peer is scikit-surprise on the same data
//!   (`bench/compare_train.py`).
//! - [`reply_rate`] (`recstream bench replies`): a worker's throughput, from
//!   its replies' own timestamps; the peers are the Python consumers in
//!   `bench/python`, read back the same way (`bench/stream.sh`).
//! - [`latency`] (`recstream bench latency`): requests at a steady rate,
//!   each timed to its reply; the peer is the broker alone, measured by
//!   pointing the probe at one topic for both requests and replies.
//! - [`freshness`] (`recstream bench freshness`): how soon a rating shows
//!   in the replies, through the learner and the model topic.
//! - [`load`] (`recstream produce --uids`): requests for random users at a
//!   steady rate, the load the other figures are taken under.
//!
//! The probes share a reader that takes every partition of a reply topic, a
//! producer that stamps each record with the wall clock, HDR histograms ([`percentiles`]) and, with `--every`, the
//! same percentiles per window of the run ([`windows`]), so that a drift
//! over minutes shows. Errors are [`BenchError`]s that name the step that
//! failed and what to do about it.

mod error;
pub mod freshness;
pub mod latency;
pub mod load;
pub mod percentiles;
mod producer;
mod reader;
pub mod reply_rate;
pub mod topn;
pub mod train;
pub mod windows;

pub use error::BenchError;
