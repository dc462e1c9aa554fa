//! The probes' producer: batching like a user's client, each record stamped with the wall clock.
//!
//! The latency and freshness probes time a reply against the moment its
//! request or rating was sent, so each record carries this process's wall
//! clock as its Kafka timestamp, and the producer is the load producer every
//! recstream benchmark uses (`linger.ms=5`, like any Kafka client's default),
//! so that the service is loaded the way its users' producers load it. A
//! full local queue is waited out and an error that can never succeed stops
//! the run ([`send_with_backpressure`]): a probe that silently dropped what
//! it could not send would report a rosier service than there is.

use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use recstream_stream::delivery::send_with_backpressure;
use recstream_stream::kafka::{KafkaSettings, LoggingContext};

use crate::BenchError;

/// The load producer of a probe.
pub(crate) fn load_producer(
    settings: &KafkaSettings,
) -> Result<FutureProducer<LoggingContext>, BenchError> {
    settings
        .load_producer()
        .create_with_context(LoggingContext::new("measure"))
        .map_err(BenchError::kafka("creating the benchmark's producer"))
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Queues `payload` to `topic` under `key`, with the Kafka timestamp `stamp_ms`.
pub(crate) async fn send_stamped(
    producer: &FutureProducer<LoggingContext>,
    topic: &str,
    key: &str,
    payload: &str,
    stamp_ms: i64,
) -> Result<DeliveryFuture, BenchError> {
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .timestamp(stamp_ms);
    Ok(send_with_backpressure(producer, record).await?)
}

/// `rate` if it is a usable rate (finite, above zero), else one a second:
/// the command line refuses such values, a library caller gets the slowest
/// sensible run instead of a division by zero.
pub(crate) fn usable_rate(rate: f64) -> f64 {
    if rate.is_finite() && rate > 0.0 {
        rate
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_rates_become_one_a_second() {
        assert_eq!(usable_rate(250.0), 250.0);
        for rate in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            assert_eq!(usable_rate(rate), 1.0, "{rate}");
        }
    }
}
