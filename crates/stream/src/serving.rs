//! The model a worker serves, swappable while requests are being answered.
//!
//! Scoring threads take a cheap reference to the current [`Recommender`] for
//! each batch; replacing it is one atomic pointer swap, so a new model never
//! pauses the stream and a batch never sees half of one model and half of
//! another.

use std::sync::Arc;

use arc_swap::ArcSwap;
use recstream_core::Recommender;

/// The current model, shared by every stage of a worker.
#[derive(Debug)]
pub struct ServingModel {
    current: ArcSwap<Recommender>,
}

impl ServingModel {
    /// Starts serving `recommender`.
    pub fn new(recommender: Recommender) -> Arc<Self> {
        let model = Arc::new(ServingModel {
            current: ArcSwap::from_pointee(recommender),
        });
        model.publish_info();
        model
    }

    /// The model to use for the next batch.
    pub fn current(&self) -> Arc<Recommender> {
        self.current.load_full()
    }

    /// Replaces the model; batches already running finish on the old one.
    pub fn replace(&self, recommender: Recommender) {
        let old = self.current.swap(Arc::new(recommender));
        metrics::gauge!(crate::metrics::MODEL_INFO, "version" => old.version().to_string())
            .set(0.0);
        self.publish_info();
    }

    fn publish_info(&self) {
        let version = self.current.load().version().to_string();
        metrics::gauge!(crate::metrics::MODEL_INFO, "version" => version).set(1.0);
    }
}
