//! The retrain's archive: every rating read from the ratings topic so far,
//! and where the reading got to, in a folder.
//!
//! `ratings.jsonl` holds one rating a line, in the ratings topic's own JSON
//! (`{"uid":..,"iid":..,"rating":..,"ts":..}`), and `positions.json` says,
//! per partition, the offset of the first rating not archived, and how many
//! bytes of `ratings.jsonl` hold the ratings before it. New ratings are
//! appended and synced before the positions are replaced (written to a
//! temporary name, synced, renamed), so a crash at any point leaves the
//! positions true; bytes past the recorded length are the remains of an
//! append the positions never covered, and are cut off on opening. With an
//! archive, a retrain reads the topic only from where the last one stopped,
//! so the topic's retention need only outlast the time between retrains.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RetrainError;
use crate::wire::{self, RatingEvent};

const RATINGS_FILE: &str = "ratings.jsonl";
const POSITIONS_FILE: &str = "positions.json";

/// Where an archive's reading of the ratings topic got to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArchivedPositions {
    /// The ratings topic.
    pub ratings_topic: String,
    /// Per partition, the offset of the first rating not archived.
    pub next: BTreeMap<i32, i64>,
    /// Bytes of `ratings.jsonl` that hold the archived ratings.
    pub bytes: u64,
    /// Ratings archived.
    pub ratings: u64,
}

/// An archive folder, opened.
#[derive(Debug)]
pub struct Archive {
    dir: PathBuf,
    positions: ArchivedPositions,
}

/// One rating as the archive writes it (the ratings topic's JSON).
#[derive(Serialize)]
struct Line<'a> {
    uid: &'a str,
    iid: &'a str,
    rating: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<i64>,
}

impl Archive {
    /// Opens (or creates) the archive in `dir` for `ratings_topic`, cutting
    /// off what an interrupted append left past the recorded positions.
    pub fn open(dir: &Path, ratings_topic: &str) -> Result<Self, RetrainError> {
        let io = |what: &str, source| RetrainError::Archive {
            path: dir.to_path_buf(),
            what: what.to_string(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(|e| io("creating the folder", e))?;
        let positions = match std::fs::read(dir.join(POSITIONS_FILE)) {
            Ok(bytes) => serde_json::from_slice::<ArchivedPositions>(&bytes).map_err(|e| {
                RetrainError::ArchiveCorrupt {
                    path: dir.join(POSITIONS_FILE),
                    problem: e.to_string(),
                }
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ArchivedPositions {
                ratings_topic: ratings_topic.to_string(),
                ..ArchivedPositions::default()
            },
            Err(e) => return Err(io("reading positions.json", e)),
        };
        if positions.ratings_topic != ratings_topic {
            return Err(RetrainError::ArchiveOfOtherTopic {
                path: dir.to_path_buf(),
                archived: positions.ratings_topic,
                asked: ratings_topic.to_string(),
            });
        }
        let ratings = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(RATINGS_FILE))
            .map_err(|e| io("opening ratings.jsonl", e))?;
        let len = ratings
            .metadata()
            .map_err(|e| io("reading ratings.jsonl", e))?
            .len();
        if len < positions.bytes {
            return Err(RetrainError::ArchiveCorrupt {
                path: dir.join(RATINGS_FILE),
                problem: format!(
                    "it has {len} bytes, but positions.json says {} were archived",
                    positions.bytes
                ),
            });
        }
        if len > positions.bytes {
            tracing::warn!(
                cut = len - positions.bytes,
                "cutting off the end of an archive append that was interrupted"
            );
            ratings
                .set_len(positions.bytes)
                .map_err(|e| io("cutting ratings.jsonl", e))?;
            ratings
                .sync_all()
                .map_err(|e| io("syncing ratings.jsonl", e))?;
        }
        Ok(Archive {
            dir: dir.to_path_buf(),
            positions,
        })
    }

    /// Where the reading got to.
    pub fn positions(&self) -> &ArchivedPositions {
        &self.positions
    }

    /// Appends `ratings`, read up to `next`, and records the new positions.
    pub fn append(
        &mut self,
        ratings: &[RatingEvent],
        next: &BTreeMap<i32, i64>,
    ) -> Result<(), RetrainError> {
        let io = |what: &str, source| RetrainError::Archive {
            path: self.dir.clone(),
            what: what.to_string(),
            source,
        };
        let mut text = Vec::with_capacity(ratings.len() * 64);
        for rating in ratings {
            let line = Line {
                uid: rating.uid.as_str(),
                iid: rating.iid.as_str(),
                rating: rating.rating,
                ts: rating.ts,
            };
            // Plain strings and numbers: serializing cannot fail.
            serde_json::to_writer(&mut text, &line).unwrap_or_default();
            text.push(b'\n');
        }
        let mut file = OpenOptions::new()
            .append(true)
            .open(self.dir.join(RATINGS_FILE))
            .map_err(|e| io("opening ratings.jsonl", e))?;
        file.write_all(&text)
            .map_err(|e| io("appending to ratings.jsonl", e))?;
        file.sync_all()
            .map_err(|e| io("syncing ratings.jsonl", e))?;
        let mut positions = self.positions.clone();
        positions.next.extend(next);
        positions.bytes += text.len() as u64;
        positions.ratings += ratings.len() as u64;
        let json = serde_json::to_vec_pretty(&positions).unwrap_or_default();
        let tmp = self.dir.join(format!("{POSITIONS_FILE}.tmp"));
        let mut out = File::create(&tmp).map_err(|e| io("writing positions.json", e))?;
        out.write_all(&json)
            .and_then(|()| out.sync_all())
            .map_err(|e| io("writing positions.json", e))?;
        std::fs::rename(&tmp, self.dir.join(POSITIONS_FILE))
            .map_err(|e| io("replacing positions.json", e))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("syncing the folder", e))?;
        self.positions = positions;
        Ok(())
    }

    /// Every archived rating, in the order archived.
    pub fn ratings(&self) -> Result<Vec<RatingEvent>, RetrainError> {
        let path = self.dir.join(RATINGS_FILE);
        let file = File::open(&path).map_err(|source| RetrainError::Archive {
            path: self.dir.clone(),
            what: "reading ratings.jsonl".into(),
            source,
        })?;
        let mut ratings = Vec::with_capacity(self.positions.ratings as usize);
        let reader = BufReader::new(file.take(self.positions.bytes));
        for (number, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| RetrainError::Archive {
                path: self.dir.clone(),
                what: "reading ratings.jsonl".into(),
                source,
            })?;
            let rating =
                wire::parse_rating(Some(line.as_bytes()), usize::MAX).map_err(|rejection| {
                    RetrainError::ArchiveCorrupt {
                        path: path.clone(),
                        problem: format!("line {}: {}", number + 1, rejection.message),
                    }
                })?;
            ratings.push(rating);
        }
        Ok(ratings)
    }
}

#[cfg(test)]
mod tests {
    use recstream_core::RawId;

    use super::*;

    fn rating(uid: &str, iid: &str, value: f32) -> RatingEvent {
        RatingEvent {
            uid: RawId::new(uid),
            iid: RawId::new(iid),
            rating: value,
            ts: Some(7),
        }
    }

    fn one_rating_archived(dir: &Path) {
        let mut archive = Archive::open(dir, "rating-events").unwrap();
        archive
            .append(&[rating("1", "a", 4.0)], &BTreeMap::from([(0, 1)]))
            .unwrap();
    }

    #[test]
    fn ratings_and_positions_read_back_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path(), "rating-events").unwrap();
        assert!(archive.positions().next.is_empty());
        archive
            .append(&[rating("1", "a", 4.0)], &BTreeMap::from([(0, 5)]))
            .unwrap();
        archive
            .append(&[rating("2", "b", 3.5)], &BTreeMap::from([(1, 2)]))
            .unwrap();
        let archive = Archive::open(dir.path(), "rating-events").unwrap();
        assert_eq!(archive.positions().next, BTreeMap::from([(0, 5), (1, 2)]));
        assert_eq!(archive.positions().ratings, 2);
        assert_eq!(
            archive.ratings().unwrap(),
            vec![rating("1", "a", 4.0), rating("2", "b", 3.5)]
        );
    }

    #[test]
    fn an_append_the_positions_never_covered_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        one_rating_archived(dir.path());
        // A crash after appending, before positions.json was replaced.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(RATINGS_FILE))
            .unwrap();
        file.write_all(b"{\"uid\":\"2\",\"iid\":\"b\",\"rat")
            .unwrap();
        let archive = Archive::open(dir.path(), "rating-events").unwrap();
        assert_eq!(archive.ratings().unwrap(), vec![rating("1", "a", 4.0)]);
        let len = std::fs::metadata(dir.path().join(RATINGS_FILE))
            .unwrap()
            .len();
        assert_eq!(len, archive.positions().bytes);
    }

    #[test]
    fn an_archive_of_another_topic_or_a_shortened_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        one_rating_archived(dir.path());
        let other = Archive::open(dir.path(), "other").unwrap_err();
        assert!(other.to_string().contains("\"rating-events\""), "{other}");
        std::fs::write(dir.path().join(RATINGS_FILE), b"").unwrap();
        let short = Archive::open(dir.path(), "rating-events").unwrap_err();
        assert!(short.to_string().contains("positions.json says"), "{short}");
    }
}
