//! Snapshots: the model a learner starts from, and when its state is
//! written down.
//!
//! A snapshot is the learner's model saved with the logs of the model
//! topic's partitions and the merged item states ([`ResumeState`]), as
//! `latest.rsm` in the snapshot folder. It only shortens the reading of the
//! model topic at start: losing one costs time, never a rating. That holds
//! because [`Learner::snapshot`] first waits for every outstanding
//! publication, so the model it saves never runs ahead of what the model
//! topic holds, and the logs are what was read from it.
//!
//! [`ResumeState`]: super::partitions::ResumeState

use std::path::{Path, PathBuf};
use std::time::Instant;

use recstream_core::{Model, modelfile};

use recstream_core::online::EntityState;

use super::partitions::ResumeState;
use super::{Learner, LearnerConfig, LearnerError};

/// The newest snapshot in `dir`, if any.
pub fn latest_snapshot(dir: &Path) -> Option<PathBuf> {
    let path = dir.join("latest.rsm");
    path.is_file().then_some(path)
}

/// The latest snapshot in the configured folder, loaded; `None` when there
/// is none, and the learner starts from its batch model.
pub(super) fn load_latest(config: &LearnerConfig) -> Result<Option<Model>, LearnerError> {
    let Some(path) = config.snapshot_dir.as_deref().and_then(latest_snapshot) else {
        return Ok(None);
    };
    let model =
        modelfile::load(&path).map_err(|source| LearnerError::SnapshotUnreadable { source })?;
    tracing::info!(snapshot = %path.display(), version = %model.version(), "resuming from snapshot");
    Ok(Some(model))
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
        let resume = ResumeState {
            partitions: self.current_logs(),
            items: self.ledger.items().cloned().collect(),
        };
        // The item rows saved are the merged states: this learner's changes
        // not merged yet are handed over again after a restart (they are in
        // the logs' tails), and must not be counted twice.
        let merged: Vec<EntityState> = self
            .pending
            .items()
            .iter()
            .map(|id| {
                self.ledger
                    .get(id)
                    .map_or_else(|| self.base.state(id), |m| m.state.clone())
            })
            .collect();
        let mut snapshot = self.model.snapshot_with(resume.worker_positions(), &merged);
        if let Some(online) = &mut snapshot.meta.online {
            online.seq = self.total_seq();
            online.resume = serde_json::to_value(&resume).ok();
        }
        let (dir, path) = (dir.clone(), dir.join("latest.rsm"));
        // Encoding and writing a model file is blocking work: off the async
        // threads, which `recstream run` shares with the worker.
        let (path, version) =
            crate::kafka::blocking("writing a snapshot", move || write(snapshot, &dir, path))
                .await??;
        tracing::info!(path = %path.display(), version = %version, took = ?started.elapsed(), "snapshot written");
        Ok(())
    }
}

/// Writes `snapshot` to `path` in `dir`; returns the path and the version written.
fn write(
    mut snapshot: Model,
    dir: &Path,
    path: PathBuf,
) -> Result<(PathBuf, String), LearnerError> {
    std::fs::create_dir_all(dir).map_err(|source| LearnerError::SnapshotFolder {
        dir: dir.to_path_buf(),
        source,
    })?;
    modelfile::save(&mut snapshot, &path)
        .map_err(|source| LearnerError::SnapshotUnwritable { source })?;
    Ok((path, snapshot.version().to_string()))
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;
    use crate::kafka::KafkaSettings;

    #[test]
    fn an_unreadable_snapshot_is_named_and_its_cause_kept() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::fs::write(dir.path().join("latest.rsm"), b"not a model").expect("written");
        let config = LearnerConfig {
            snapshot_dir: Some(dir.path().to_path_buf()),
            ..LearnerConfig::new(KafkaSettings::new("127.0.0.1:9"))
        };
        let error = load_latest(&config).expect_err("a broken snapshot is refused");
        let text = error.to_string();
        assert!(text.contains("latest.rsm"), "{text}");
        assert!(text.contains("move it aside"), "{text}");
        assert!(
            error
                .source()
                .is_some_and(|s| s.is::<modelfile::ModelFileError>())
        );
    }
}
