//! Rating data in memory, and the readers that fill it from MovieLens-style files.
//!
//! A [`Dataset`] is the explicit-feedback triples `(user, item, rating)` with
//! dense indices, the id maps that translate them back to the raw ids of the
//! file, and the timestamps when the file has them (online-learning replays
//! need the original order of events). Readers live in [`ratings`] (one per
//! file format, chosen by [`RatingsFormat`]) and [`titles`] (movie titles);
//! every malformed line is an error that names the file, the line and the
//! reason, unless the caller asks to skip and count such lines.

pub mod format;
pub mod ratings;
pub mod titles;

use std::path::PathBuf;

use crate::ids::IdMap;

pub use format::{RatingsFormat, TitlesFormat};
pub use ratings::{ReadOptions, ReadReport, read_ratings};
pub use titles::{ItemTitles, read_titles};

/// One explicit rating with dense user and item indices.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rating {
    /// Dense user index.
    pub user: u32,
    /// Dense item index.
    pub item: u32,
    /// The rating as given (e.g. 1..=5, or 0.5 steps in ml-latest).
    pub value: f32,
}

/// The lowest and highest rating; estimates are clipped to this range.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RatingScale {
    /// Lowest possible rating.
    pub min: f32,
    /// Highest possible rating.
    pub max: f32,
}

impl RatingScale {
    /// The 1..=5 star scale of MovieLens 100K/1M/10M.
    pub const FIVE_STARS: RatingScale = RatingScale { min: 1.0, max: 5.0 };

    /// Clips an estimate into the scale (which must pass [`RatingScale::check`]).
    pub fn clip(&self, estimate: f32) -> f32 {
        estimate.clamp(self.min, self.max)
    }

    /// Checks that the scale is a finite range, `min <= max` (clipping to
    /// anything else panics).
    pub fn check(&self) -> Result<(), String> {
        if self.min.is_finite() && self.max.is_finite() && self.min <= self.max {
            Ok(())
        } else {
            Err(format!(
                "unusable rating scale {}..={}: it must be finite with min <= max",
                self.min, self.max
            ))
        }
    }

    /// True when `value` is a finite rating within the scale.
    pub fn contains(&self, value: f32) -> bool {
        value.is_finite() && self.min <= value && value <= self.max
    }
}

/// Ratings with their id maps: everything training and evaluation need.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    /// Raw user ids to dense indices.
    pub users: IdMap,
    /// Raw item ids to dense indices.
    pub items: IdMap,
    /// The ratings in file order.
    pub ratings: Vec<Rating>,
    /// Unix timestamps parallel to `ratings`, or empty when the file had none.
    pub timestamps: Vec<i64>,
}

impl Dataset {
    /// Adds a rating given raw ids, interning them.
    pub fn push(&mut self, user: &str, item: &str, value: f32, timestamp: Option<i64>) {
        let user = self.users.intern(user);
        let item = self.items.intern(item);
        self.push_indexed(user, item, value, timestamp);
    }

    /// Adds a rating whose ids are already interned.
    pub fn push_indexed(&mut self, user: u32, item: u32, value: f32, timestamp: Option<i64>) {
        self.ratings.push(Rating { user, item, value });
        if let Some(ts) = timestamp {
            if self.timestamps.len() + 1 == self.ratings.len() {
                self.timestamps.push(ts);
            }
        } else {
            // A single line without a timestamp makes the column unusable.
            self.timestamps.clear();
        }
    }

    /// The observed rating range, or `None` for an empty data set.
    pub fn observed_scale(&self) -> Option<RatingScale> {
        let first = self.ratings.first()?.value;
        let (min, max) = self.ratings.iter().fold((first, first), |(lo, hi), r| {
            (lo.min(r.value), hi.max(r.value))
        });
        Some(RatingScale { min, max })
    }

    /// Number of ratings.
    pub fn len(&self) -> usize {
        self.ratings.len()
    }

    /// True when there are no ratings.
    pub fn is_empty(&self) -> bool {
        self.ratings.is_empty()
    }

    /// True when every rating has a timestamp.
    pub fn has_timestamps(&self) -> bool {
        !self.ratings.is_empty() && self.timestamps.len() == self.ratings.len()
    }
}

/// Why data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A line is malformed.
    #[error("{path}:{line}: {reason}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The file as a whole is unusable (unknown format, no ratings, ...).
    #[error("{path}: {reason}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}
