//! The model topic: how a learner's updates and new batch models reach every worker.
//!
//! One partition, so every worker sees one order. Messages are keyed so that
//! a compacted topic keeps exactly what a newcomer needs: `user:<id>` and
//! `item:<id>` carry the *full* latest state of a user or an item (never a
//! difference), `model` announces the current batch model, and `marker:*`
//! messages are written by a learner to find the end of the topic on restart.
//! Every state carries the batch model it belongs to and a sequence number.
//!
//! Batch model files are too large for one Kafka message (1 MiB by default),
//! so they travel as numbered chunks on a files topic; the announcement says
//! where they start and how to verify the assembled file (SHA-256).

use recstream_core::RawId;
use recstream_core::online::{EntityState, Update};
use serde::{Deserialize, Serialize};

/// A message on the model topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ModelMessage {
    /// A user's latest state.
    User {
        /// Update sequence number.
        seq: u64,
        /// Batch model the state belongs to.
        base: String,
        /// The state.
        state: EntityState,
        /// Items the user rated since the batch model.
        rated: Vec<RawId>,
        /// The rating this state came from: its place in the ratings topic.
        source: Option<Source>,
        /// That rating's timestamp (ms since the epoch), for freshness metrics.
        rating_ts_ms: Option<i64>,
    },
    /// An item's latest state.
    Item {
        /// Update sequence number.
        seq: u64,
        /// Batch model the state belongs to.
        base: String,
        /// The state.
        state: EntityState,
    },
    /// A new batch model to serve.
    Model(ModelAnnouncement),
    /// Written by a learner at start-up to find the end of the topic.
    Marker {
        /// Unique per start-up.
        nonce: String,
    },
}

/// Where a rating came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// Ratings topic partition.
    pub partition: i32,
    /// Offset in it.
    pub offset: i64,
}

/// Where to find a published batch model and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelAnnouncement {
    /// The model's id (its content checksum).
    pub id: String,
    /// Size of the model file in bytes.
    pub bytes: u64,
    /// SHA-256 of the file, lowercase hex.
    pub sha256: String,
    /// Topic holding the chunks.
    pub files_topic: String,
    /// Partition of the chunks.
    pub partition: i32,
    /// Offset of the first chunk.
    pub first_offset: i64,
    /// Number of chunks (keyed `<id>:<index>`).
    pub chunks: u32,
}

impl ModelMessage {
    /// The compaction key.
    pub fn key(&self) -> String {
        match self {
            ModelMessage::User { state, .. } => format!("user:{}", state.id),
            ModelMessage::Item { state, .. } => format!("item:{}", state.id),
            ModelMessage::Model(_) => "model".to_string(),
            ModelMessage::Marker { .. } => "marker".to_string(),
        }
    }

    /// JSON bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a message.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The two messages of a learner update: the item first, then the user
/// (whose list of rated items may name the item).
pub fn update_messages(
    update: &Update,
    source: Option<Source>,
    rating_ts_ms: Option<i64>,
) -> [ModelMessage; 2] {
    [
        ModelMessage::Item {
            seq: update.seq,
            base: update.base_id.clone(),
            state: update.item.clone(),
        },
        ModelMessage::User {
            seq: update.seq,
            base: update.base_id.clone(),
            state: update.user.clone(),
            rated: update.user_rated.clone(),
            source,
            rating_ts_ms,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(id: &str) -> EntityState {
        EntityState {
            id: RawId::new(id),
            bias: 0.25,
            factors: vec![0.1, -0.2, 0.3, 1.0e-7],
            count: 3,
        }
    }

    #[test]
    fn messages_round_trip_exactly_and_are_keyed_by_entity() {
        let update = Update {
            seq: 7,
            base_id: "abc".into(),
            user: state("196"),
            user_rated: vec![RawId::new("242")],
            item: state("242"),
            item_delta: None,
        };
        let [item, user] = update_messages(
            &update,
            Some(Source {
                partition: 2,
                offset: 40,
            }),
            Some(1_700_000_000_000),
        );
        assert_eq!(item.key(), "item:242");
        assert_eq!(user.key(), "user:196");
        for message in [item, user] {
            assert_eq!(ModelMessage::decode(&message.encode()).unwrap(), message);
        }
        let announcement = ModelMessage::Model(ModelAnnouncement {
            id: "abc".into(),
            bytes: 10,
            sha256: "00".into(),
            files_topic: "model-files".into(),
            partition: 0,
            first_offset: 5,
            chunks: 1,
        });
        assert_eq!(announcement.key(), "model");
        assert_eq!(
            ModelMessage::decode(&announcement.encode()).unwrap(),
            announcement
        );
        assert!(ModelMessage::decode(b"{\"type\":\"nonsense\"}").is_err());
    }
}
