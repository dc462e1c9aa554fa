//! Where each shard of a Kinesis stream was read to, kept across restarts.
//!
//! A [`Checkpoint`] holds, per shard, the last sequence number whose record
//! (and every earlier record of the shard) was answered or dead-lettered and
//! acknowledged, or that the shard was read to its end: the same
//! at-least-once rule as Kafka's committed offsets. A restarted worker
//! resumes each shard right after it (`AFTER_SEQUENCE_NUMBER`), and reads a
//! child shard only once its parents are recorded as ended.
//!
//! The [`FileStore`] keeps it in a JSON file, replaced whole (written to a
//! temporary name, synced, renamed, the folder synced), so a crash leaves
//! the old checkpoint or the new one, never half of one. It also holds an
//! exclusive lock on the file for as long as it lives: a second worker
//! pointed at the same checkpoint refuses to start, instead of reading the
//! same shards and racing the first one's checkpoints. A missing file is a
//! first start (the shards start where `--kinesis-start` says); a file that
//! cannot be read is an error, never a silent restart from somewhere else.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How far a shard was read and acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardPosition {
    /// Every record up to this sequence number is done.
    After(String),
    /// The shard is closed and every record of it is done.
    End,
}

/// The positions of one stream's shards.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The stream.
    pub stream: String,
    /// Per shard id.
    pub shards: BTreeMap<String, ShardPosition>,
    /// A relay's: per partition of the Kafka topic it writes, the offset
    /// from which records after these positions may have been written
    /// already (read back at start, so that none is written twice).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub relayed_from: BTreeMap<i32, i64>,
}

impl Checkpoint {
    /// An empty checkpoint of `stream`.
    pub fn new(stream: &str) -> Self {
        Checkpoint {
            stream: stream.to_string(),
            shards: BTreeMap::new(),
            relayed_from: BTreeMap::new(),
        }
    }

    /// Whether `shard` is recorded as read to its end.
    pub fn ended(&self, shard: &str) -> bool {
        self.shards.get(shard) == Some(&ShardPosition::End)
    }
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The file could not be read or written.
    #[error("the Kinesis checkpoint {}: {what}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a checkpoint.
    #[error(
        "the Kinesis checkpoint {} cannot be read ({problem}); refusing to guess where the shards resume: fix or remove the file (without it the shards start where --kinesis-start says)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The file is another stream's.
    #[error(
        "the Kinesis checkpoint {} is of stream {found:?}, not {expected:?}: give each stream its own checkpoint file",
        path.display()
    )]
    OtherStream {
        /// The file.
        path: PathBuf,
        /// The stream it holds.
        found: String,
        /// The stream asked for.
        expected: String,
    },
    /// Another process holds the checkpoint.
    #[error(
        "another worker is reading with the Kinesis checkpoint {} (it holds the file's lock): one worker per stream and checkpoint, since two would read the same shards",
        path.display()
    )]
    Locked {
        /// The file.
        path: PathBuf,
    },
}

/// A checkpoint kept in a local file, locked for as long as the store lives.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    /// Held open for its lock.
    _lock: File,
}

impl FileStore {
    /// Locks the checkpoint at `path` and reads it (`None`: no file yet).
    pub fn open(path: &Path, stream: &str) -> Result<(Self, Option<Checkpoint>), CheckpointError> {
        let io = |what, source| CheckpointError::Io {
            path: path.to_path_buf(),
            what,
            source,
        };
        if let Some(dir) = parent(path) {
            std::fs::create_dir_all(dir).map_err(|e| io("creating its folder", e))?;
        }
        let lock_path = lock_path(path);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("opening its lock file", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(CheckpointError::Locked {
                    path: path.to_path_buf(),
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("locking it", e)),
        }
        let store = FileStore {
            path: path.to_path_buf(),
            _lock: lock,
        };
        let checkpoint = match std::fs::read(path) {
            Ok(bytes) => {
                let checkpoint: Checkpoint =
                    serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
                        path: path.to_path_buf(),
                        problem: e.to_string(),
                    })?;
                if checkpoint.stream != stream {
                    return Err(CheckpointError::OtherStream {
                        path: path.to_path_buf(),
                        found: checkpoint.stream,
                        expected: stream.to_string(),
                    });
                }
                Some(checkpoint)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io("reading it", e)),
        };
        Ok((store, checkpoint))
    }

    /// Replaces the checkpoint on disk with `checkpoint`.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
        let io = |what, source| CheckpointError::Io {
            path: self.path.clone(),
            what,
            source,
        };
        let json = serde_json::to_vec_pretty(checkpoint).unwrap_or_default();
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = File::create(&tmp).map_err(|e| io("writing it", e))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| io("writing it", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io("replacing it", e))?;
        if let Some(dir) = parent(&self.path) {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("syncing its folder", e))?;
        }
        Ok(())
    }
}

fn parent(path: &Path) -> Option<&Path> {
    path.parent().filter(|p| !p.as_os_str().is_empty())
}

fn lock_path(path: &Path) -> PathBuf {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    PathBuf::from(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions() -> Checkpoint {
        let mut checkpoint = Checkpoint::new("requests");
        checkpoint.shards.insert(
            "shardId-000000000000".into(),
            ShardPosition::After("49590338271490256608559692538361571095921575989136588802".into()),
        );
        checkpoint
            .shards
            .insert("shardId-000000000001".into(), ShardPosition::End);
        checkpoint
    }

    #[test]
    fn a_checkpoint_reads_back_and_a_missing_one_is_a_first_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/requests.json");
        let (store, found) = FileStore::open(&path, "requests").unwrap();
        assert_eq!(found, None);
        store.save(&positions()).unwrap();
        drop(store);
        let (_store, found) = FileStore::open(&path, "requests").unwrap();
        let found = found.unwrap();
        assert_eq!(found, positions());
        assert!(found.ended("shardId-000000000001"));
        assert!(!found.ended("shardId-000000000000"));
    }

    #[test]
    fn a_damaged_or_foreign_checkpoint_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.json");
        std::fs::write(
            &path,
            b"{\"stream\": \"requests\", \"shards\": {\"s\": {\"aft",
        )
        .unwrap();
        let damaged = FileStore::open(&path, "requests").unwrap_err();
        assert!(
            matches!(damaged, CheckpointError::Corrupt { .. }),
            "{damaged}"
        );
        assert!(damaged.to_string().contains("--kinesis-start"), "{damaged}");
        std::fs::write(&path, br#"{"stream": "other", "shards": {}}"#).unwrap();
        let foreign = FileStore::open(&path, "requests").unwrap_err();
        assert!(foreign.to_string().contains("\"other\""), "{foreign}");
    }

    #[test]
    fn a_second_reader_of_the_same_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("requests.json");
        let (first, _) = FileStore::open(&path, "requests").unwrap();
        let second = FileStore::open(&path, "requests").unwrap_err();
        assert!(matches!(second, CheckpointError::Locked { .. }), "{second}");
        drop(first);
        assert!(FileStore::open(&path, "requests").is_ok());
    }
}
