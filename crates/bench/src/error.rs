//! Why a benchmark stopped, with the failed step named and the fix suggested.
//!
//! A benchmark is a client of somebody else's service: most of what can go
//! wrong is outside it (a broker that is not there, a topic nobody created,
//! a model file that is not one). Each variant says which step failed and
//! what the person at the keyboard can do, and keeps the underlying error
//! as its `source`, so that `recstream`'s `error: ...` line shows the whole
//! chain once and nothing has to be guessed from a librdkafka code alone.

use std::path::PathBuf;
use std::time::Duration;

use rdkafka::error::KafkaError;
use recstream_core::modelfile::ModelFileError;
use recstream_core::svd::TrainError;
use recstream_stream::delivery::Undeliverable;
use recstream_stream::kafka::BlockingCallError;
use recstream_stream::topics::TopicError;

/// Why a benchmark could not run or finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A Kafka client could not be created, assigned or asked.
    #[error("{what} (check --brokers and any --kafka settings)")]
    Kafka {
        /// The step that failed, e.g. "creating the reader of \"replies\"".
        what: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// The topics could not be looked up.
    #[error("looking up the benchmark's topics")]
    Topic(#[from] TopicError),
    /// The topic to read never appeared.
    #[error(
        "topic {topic:?} did not appear within {} s; check its name, or start the worker that writes it first",
        waited.as_secs()
    )]
    TopicNeverAppeared {
        /// The topic waited for.
        topic: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A blocking librdkafka call (watermarks, assignment) did not finish.
    #[error("a blocking Kafka call did not finish")]
    Blocking(#[from] BlockingCallError),
    /// A benchmark message can never be delivered as it is.
    #[error("sending the benchmark's messages")]
    Undeliverable(#[from] Undeliverable),
    /// The warm-up request was not acknowledged.
    #[error(
        "the warm-up request to {topic:?} was not delivered (is the topic there, and may this client write to it?)"
    )]
    WarmUp {
        /// The topic it was sent to.
        topic: String,
        /// librdkafka's error.
        #[source]
        source: KafkaError,
    },
    /// A histogram could not be created: its bounds are the harness's own
    /// constants, so this is a bug here, not a problem with the input.
    #[error(
        "cannot create a histogram for 1..={high} (a bug in the benchmark harness; please report it)"
    )]
    Histogram {
        /// The highest value it was to track.
        high: u64,
        /// hdrhistogram's reason.
        #[source]
        source: hdrhistogram::CreationError,
    },
    /// The model to benchmark could not be loaded.
    #[error("cannot load the model to benchmark from {path}; check the path, or use --synthetic-items N", path = path.display())]
    Model {
        /// The model file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: ModelFileError,
    },
    /// The model has no user with factors, so there is nothing to time.
    #[error("the model knows no user; benchmark a model trained on ratings")]
    NoUsers,
    /// A training run failed.
    #[error("training run {run} failed (check the data and the hyper-parameters)")]
    Training {
        /// Which run, from 1.
        run: usize,
        /// The trainer's reason.
        #[source]
        source: TrainError,
    },
}

impl BenchError {
    /// A [`BenchError::Kafka`] for the step `what`.
    pub(crate) fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> Self {
        let what = what.into();
        move |source| BenchError::Kafka { what, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_error_names_itself_not_a_kafka_cancellation() {
        let source = hdrhistogram::Histogram::<u64>::new_with_bounds(0, 10, 3)
            .err()
            .map(|source| BenchError::Histogram { high: 10, source });
        let Some(error) = source else {
            panic!("a low bound of 0 is refused");
        };
        assert!(error.to_string().contains("histogram"), "{error}");
        assert!(std::error::Error::source(&error).is_some());
    }
}
