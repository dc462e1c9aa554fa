//! Snapshots: the model a learner starts from, and when its state is
//! written down.
//!
//! A snapshot is the learner's model saved with its [`Positions`], as
//! `latest.rsm` in the snapshot folder. It only shortens the replay of the
//! model topic at start: losing one costs time, never a rating. That holds
//! because [`Learner::snapshot`] first waits for every outstanding
//! publication, so the positions it saves never run ahead of what the
//! model topic holds.
//!
//! [`Positions`]: super::positions::Positions

use std::path::{Path, PathBuf};
use std::time::Instant;

use recstream_core::{Model, modelfile};

use super::{Learner, LearnerConfig, LearnerError};

/// The newest snapshot in `dir`, if any.
pub fn latest_snapshot(dir: &Path) -> Option<PathBuf> {
    let path = dir.join("latest.rsm");
    path.is_file().then_some(path)
}

/// The model to start from: the latest snapshot in the configured folder,
/// `initial` when there is none.
pub(super) fn start_model(config: &LearnerConfig, initial: Model) -> Result<Model, LearnerError> {
    let Some(path) = config.snapshot_dir.as_deref().and_then(latest_snapshot) else {
        return Ok(initial);
    };
    let model = modelfile::load(&path).map_err(|e| LearnerError::Snapshot(e.to_string()))?;
    tracing::info!(snapshot = %path.display(), version = %model.version(), "resuming from snapshot");
    Ok(model)
}

impl Learner {
    /// Waits for every outstanding publication, then writes a snapshot
    /// (when there is a snapshot folder).
    pub(super) async fn snapshot(&mut self) -> Result<(), LearnerError> {
        self.publisher.settle().await?;
        let Some(dir) = &self.config.snapshot_dir else {
            return Ok(());
        };
        let started = Instant::now();
        std::fs::create_dir_all(dir)
            .map_err(|e| LearnerError::Snapshot(format!("{}: {e}", dir.display())))?;
        let positions = self.positions.to_save(self.publisher.last_update());
        let mut snapshot = self.model.snapshot(positions);
        let path = dir.join("latest.rsm");
        modelfile::save(&mut snapshot, &path).map_err(|e| LearnerError::Snapshot(e.to_string()))?;
        tracing::info!(path = %path.display(), version = %snapshot.version(), took = ?started.elapsed(), "snapshot written");
        Ok(())
    }
}
