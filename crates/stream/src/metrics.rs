//! Metrics and health: Prometheus text on `/metrics`, liveness on `/healthz`, readiness on `/readyz`.
//!
//! Counters and histograms go through the `metrics` facade, so the worker
//! code only names what it counts; this module installs the Prometheus
//! recorder (once per process) and serves it over HTTP on an address the
//! operator chooses (`--metrics-addr`, loopback by default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

/// Requests read from the input topic.
pub const REQUESTS_CONSUMED: &str = "recstream_requests_consumed_total";
/// Replies acknowledged by the broker.
pub const REPLIES_PRODUCED: &str = "recstream_replies_produced_total";
/// Dead letters acknowledged by the broker, by `reason`.
pub const DEAD_LETTERS: &str = "recstream_dead_letters_total";
/// Cold-start answers (unknown users) among the replies.
pub const COLD_STARTS: &str = "recstream_cold_start_replies_total";
/// Outputs that had to be sent again after a delivery failure.
pub const DELIVERY_RETRIES: &str = "recstream_delivery_retries_total";
/// Times a producer waited because its local queue was full, by `topic`.
pub const PRODUCER_QUEUE_FULL: &str = "recstream_producer_queue_full_waits_total";
/// Next offset committed (stored for commit) per `partition`.
pub const COMMITTED_OFFSET: &str = "recstream_committed_offset";
/// High watermark minus committed offset per `partition`.
pub const CONSUMER_LAG: &str = "recstream_consumer_lag";
/// Outputs sent and not yet acknowledged.
pub const IN_FLIGHT: &str = "recstream_in_flight";
/// Partitions currently assigned to this worker.
pub const ASSIGNED_PARTITIONS: &str = "recstream_assigned_partitions";
/// Request timestamp to acknowledged reply, in seconds.
pub const LATENCY: &str = "recstream_request_latency_seconds";
/// Batch model currently serving, as a `model` label on a gauge of 1.
pub const MODEL_INFO: &str = "recstream_model_info";
/// Sequence number of the last online update applied.
pub const MODEL_SEQUENCE: &str = "recstream_model_update_sequence";
/// Online updates applied from the model topic.
pub const MODEL_UPDATES: &str = "recstream_model_updates_applied_total";
/// Batch models swapped in, and refused, by `outcome`.
pub const MODEL_SWAPS: &str = "recstream_model_swaps_total";
/// Rating timestamp to the first reply for that user reflecting it, in seconds.
pub const FRESHNESS: &str = "recstream_freshness_seconds";
/// 1 while a consumer-only tool waits for `topic` to be created, 0 once it exists.
pub const WAITING_FOR_TOPIC: &str = "recstream_waiting_for_topic";
/// Outputs that could not be delivered and will not be retried, by `reason`.
pub const DELIVERY_FAILURES: &str = "recstream_delivery_failures_total";
/// Errors reading a topic (librdkafka retries them), by `topic`.
pub const CONSUME_ERRORS: &str = "recstream_consume_errors_total";
/// Times a worker found the model-topic updates it needed gone (it stops).
pub const MODEL_TOPIC_TRUNCATED: &str = "recstream_model_topic_truncated_total";
/// Offset commits the broker refused.
pub const COMMIT_FAILURES: &str = "recstream_commit_failures_total";
/// Ratings learnt by the learner.
pub const RATINGS_LEARNT: &str = "recstream_ratings_learnt_total";
/// Ratings partitions a learner owns and has restored.
pub const LEARNER_PARTITIONS: &str = "recstream_learner_partitions";
/// Batch models a learner switched to (published by hand or retrained).
pub const LEARNER_MODEL_SWITCHES: &str = "recstream_learner_model_switches_total";
/// Item states a learner merged from the learners' deltas and published.
pub const ITEMS_MERGED: &str = "recstream_items_merged_total";
/// Item-delta batches a learner dropped, by `reason` (`other_model`,
/// `unreadable`, `wrong_partition`).
pub const ITEM_DELTAS_DROPPED: &str = "recstream_item_deltas_dropped_total";
/// Share of one core the embedded broker's thread used over the last few seconds.
pub const EMBEDDED_BROKER_CPU: &str = "recstream_embedded_broker_cpu_ratio";
/// Prequential RMSE of the learner so far.
pub const PREQUENTIAL_RMSE: &str = "recstream_prequential_rmse";
/// Prequential hit rate at 10 of the learner so far.
pub const PREQUENTIAL_HIT_RATE: &str = "recstream_prequential_hit_rate_at_10";
/// 1 while a `component` (`worker`, `learner`) is ready, 0 otherwise: what
/// `/readyz` says, as a series that alerts and dashboards can read (and that
/// `recstream run`, whose `/readyz` is the worker's, reports for both).
pub const READY: &str = "recstream_ready";

const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];

/// The process-wide Prometheus recorder (installed on first use).
pub fn recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY.to_string()), &LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(FRESHNESS.to_string()), &LATENCY_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (embedding applications):
                // keep a private one so rendering still works.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// What a [`Health`] is the readiness of: the `component` label of [`READY`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Component {
    /// A serving worker.
    #[default]
    Worker,
    /// A learner.
    Learner,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Worker => "worker",
            Component::Learner => "learner",
        }
    }
}

/// Liveness and readiness flags.
#[derive(Debug)]
pub struct Health {
    ready: AtomicBool,
    component: Component,
}

impl Default for Health {
    /// A worker's health, not ready.
    fn default() -> Self {
        Health::new(Component::Worker)
    }
}

impl Health {
    /// Not ready yet. The [`READY`] gauge is set to 0 at once, through the
    /// process recorder (installed here if it is not yet), so that a
    /// component that never gets ready shows as such rather than as absent.
    pub fn new(component: Component) -> Self {
        recorder();
        let health = Health {
            ready: AtomicBool::new(false),
            component,
        };
        health.set_ready(false);
        health
    }

    /// Marks the component ready (model loaded, group joined) or not.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
        metrics::gauge!(READY, "component" => self.component.as_str())
            .set(f64::from(u8::from(ready)));
    }

    /// True when ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` until `shutdown`.
/// Returns the address actually bound (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let handle = recorder();
    let app = Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .route("/readyz", get(ready))
        .with_state(health);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!("metrics server stopped: {e}");
        }
    });
    Ok(bound)
}

async fn ready(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A request line (and headers) as a hostile or broken client sends it:
    /// pieces of valid requests mixed with random bytes, cut anywhere.
    fn hostile_request(seed: &mut u64) -> Vec<u8> {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let pieces: [&[u8]; 12] = [
            b"GET ",
            b"POST ",
            b"/metrics",
            b"/readyz",
            b"/healthz",
            b" HTTP/1.1\r\n",
            b"Host: x\r\n",
            b"\r\n",
            b"Content-Length: 99999999999\r\n",
            b"%00%ff/../",
            b"Transfer-Encoding: chunked\r\n",
            b"\xff\xfe\x00",
        ];
        let mut request = Vec::new();
        for _ in 0..next() % 12 {
            match next() % 3 {
                0 => {
                    let len = (next() % 64) as usize;
                    request.extend((0..len).map(|_| next() as u8));
                }
                1 => request.extend(std::iter::repeat_n(b'A', (next() % 20_000) as usize)),
                _ => request.extend_from_slice(pieces[(next() % 12) as usize]),
            }
        }
        let cut = (next() as usize) % (request.len() + 1);
        request.truncate(cut.max(request.len() / 2));
        request
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hostile_requests_get_an_answer_or_a_close_within_a_second_and_the_server_lives_on() {
        let shutdown = CancellationToken::new();
        let health = Arc::new(Health::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), health, shutdown.clone())
            .await
            .unwrap();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut answered = 0;
        for case in 0..recstream_core::testing::fuzz_cases() {
            let request = hostile_request(&mut seed);
            let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            // The server may close on a bad request before reading it all.
            let _ = stream.write_all(&request).await;
            let _ = stream.shutdown().await;
            let mut response = Vec::new();
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(1),
                stream.read_to_end(&mut response),
            )
            .await;
            assert!(
                read.is_ok(),
                "case {case}: no answer and no close within 1 s for {:?}",
                String::from_utf8_lossy(&request[..request.len().min(200)])
            );
            answered += usize::from(response.starts_with(b"HTTP/1.1 "));
        }
        assert!(answered > 0, "the premise: some cases were answered at all");
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        shutdown.cancel();
    }
}
