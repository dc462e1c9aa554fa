//! The model a worker serves: updated in place by the model topic, swapped whole for a new batch model.
//!
//! Scoring takes a read lock on the current [`Recommender`] for a batch;
//! updates from the learner take the write lock for the few microseconds
//! they need; a new batch model replaces the whole thing with one atomic
//! pointer swap, so batches already running finish on the old model and no
//! request waits for a load. The struct also keeps, per user, the timestamp
//! of the newest rating not yet reflected in a reply, which is what the
//! freshness metric measures.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use recstream_core::Recommender;

/// The current model, shared by every stage of a worker.
#[derive(Debug)]
pub struct ServingModel {
    current: ArcSwap<RwLock<Recommender>>,
    unseen: Mutex<HashMap<String, i64>>,
    unseen_count: AtomicUsize,
}

impl ServingModel {
    /// Starts serving `recommender`.
    pub fn new(recommender: Recommender) -> Arc<Self> {
        let model = Arc::new(ServingModel {
            current: ArcSwap::from_pointee(RwLock::new(recommender)),
            unseen: Mutex::new(HashMap::new()),
            unseen_count: AtomicUsize::new(0),
        });
        model.publish_info(None);
        model
    }

    /// The model for the next batch; lock it with [`read`] for the batch.
    pub fn current(&self) -> Arc<RwLock<Recommender>> {
        self.current.load_full()
    }

    /// The version being served now.
    pub fn version(&self) -> String {
        read(&self.current()).version().to_string()
    }

    /// The id of the batch model being served.
    pub fn base_id(&self) -> String {
        read(&self.current()).model().base_id().to_string()
    }

    /// Replaces the model; batches already running finish on the old one.
    pub fn replace(&self, recommender: Recommender) {
        let old = self.base_id();
        self.current.store(Arc::new(RwLock::new(recommender)));
        self.publish_info(Some(old));
    }

    /// Changes the current model in place (online updates).
    pub fn update<T>(&self, change: impl FnOnce(&mut Recommender) -> T) -> T {
        let current = self.current();
        let mut guard = write(&current);
        change(&mut guard)
    }

    /// Records that the user's model now reflects a rating made at
    /// `rating_ts_ms`; call while the update is being applied.
    pub fn note_rating(&self, uid: &str, rating_ts_ms: i64) {
        if let Ok(mut unseen) = self.unseen.lock() {
            unseen.entry(uid.to_string()).or_insert(rating_ts_ms);
            self.unseen_count.store(unseen.len(), Ordering::Relaxed);
        }
    }

    /// Called for each reply while the model is read-locked: if it is the
    /// first reply to reflect a new rating, records how fresh it is.
    pub fn answered(&self, uid: &str) {
        if self.unseen_count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let Ok(mut unseen) = self.unseen.lock() else {
            return;
        };
        if let Some(rating_ms) = unseen.remove(uid) {
            self.unseen_count.store(unseen.len(), Ordering::Relaxed);
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            metrics::histogram!(crate::metrics::FRESHNESS)
                .record((now_ms - rating_ms).max(0) as f64 / 1000.0);
        }
    }

    /// The batch model id is a label (a handful over a worker's life); the
    /// update sequence is a gauge of its own, not a label.
    fn publish_info(&self, old_base: Option<String>) {
        if let Some(old) = old_base {
            metrics::gauge!(crate::metrics::MODEL_INFO, "model" => old).set(0.0);
        }
        metrics::gauge!(crate::metrics::MODEL_INFO, "model" => self.base_id()).set(1.0);
    }
}

/// Read-locks a model (a panic elsewhere does not stop serving).
pub fn read(model: &RwLock<Recommender>) -> RwLockReadGuard<'_, Recommender> {
    model
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Write-locks a model.
pub fn write(model: &RwLock<Recommender>) -> RwLockWriteGuard<'_, Recommender> {
    model
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
