//! The names of the Kinesis transport's Prometheus metrics, beside the
//! worker's (`recstream_stream::metrics`), on the same `/metrics`.

/// Milliseconds a shard's reader is behind the tip, by `shard` (Kinesis's
/// `MillisBehindLatest`).
pub const MILLIS_BEHIND: &str = "recstream_kinesis_millis_behind_latest";
/// Calls or records Kinesis throttled, by `call`.
pub const THROTTLED: &str = "recstream_kinesis_throttled_total";
/// Shard iterators renewed after expiring.
pub const ITERATORS_RENEWED: &str = "recstream_kinesis_iterators_renewed_total";
/// Shards being read.
pub const SHARDS_READ: &str = "recstream_kinesis_shards_read";
/// Ratings the relay wrote to the Kafka ratings topic.
pub const RELAYED: &str = "recstream_kinesis_relayed_total";
/// Ratings the relay found on Kafka already at a restart, and skipped.
pub const ALREADY_RELAYED: &str = "recstream_kinesis_already_relayed_total";
