//! The model topic: how learners' updates and new batch models reach every worker.
//!
//! Partitioned like the ratings topic. Partition `p` holds the states of the
//! users whose ratings arrive on ratings partition `p`, written by the one
//! learner that owns `p`, and the merged states of the items whose partition
//! is `p` ([`item_partition`]), written by the same learner. So each
//! partition has one writer and one order, and a worker that follows every
//! partition sees each user's and item's states in order.
//!
//! Messages are keyed so that a compacted topic keeps exactly what a
//! newcomer needs: `user:<id>` and `item:<id>` carry the *full* latest state
//! of a user or an item (never a difference), `model` announces the current
//! batch model (on every partition), `marker` messages are written by a
//! learner to find the end of a partition, and `forwarded` and `merged`
//! record how far a partition's item deltas were handed over and merged.
//! Every state carries the batch model it belongs to and a sequence number.
//!
//! Item deltas travel on their own topic, partitioned like the others: a
//! [`DeltaMessage`] on partition `q` holds one source's deltas for the items
//! of partition `q`.
//!
//! Batch model files are too large for one Kafka message (1 MiB by default),
//! so they travel as numbered chunks on a files topic; the announcement says
//! where they start and how to verify the assembled file (SHA-256).

use std::collections::BTreeMap;

use recstream_core::RawId;
use recstream_core::online::{DeltaBatch, EntityState, ItemDelta, Update};
use serde::{Deserialize, Serialize};

/// A message on the model topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ModelMessage {
    /// A user's latest state.
    User {
        /// Ratings learnt on this partition so far (1, 2, ...): one per
        /// rating, so the last one says how many were learnt.
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
        /// What the rating changed in its item, so that a learner taking
        /// the partition over can hand it over again if need be.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        item_delta: Option<ItemDelta>,
    },
    /// An item's latest state.
    Item {
        /// States published on this partition so far.
        seq: u64,
        /// Batch model the state belongs to.
        base: String,
        /// The state.
        state: EntityState,
        /// Per ratings partition, the last rating whose item delta the
        /// state holds (empty for a single learner's own item).
        #[serde(
            default,
            skip_serializing_if = "BTreeMap::is_empty",
            with = "partition_pairs"
        )]
        through: BTreeMap<i32, i64>,
    },
    /// A new batch model to serve.
    Model(ModelAnnouncement),
    /// Written by a learner to find the end of a partition.
    Marker {
        /// Unique per start-up.
        nonce: String,
    },
    /// The item deltas of this partition's ratings up to `through` were
    /// handed over (acknowledged on the deltas topic).
    Forwarded {
        /// Batch model the deltas belong to.
        base: String,
        /// The ratings partition (the same as this one).
        partition: i32,
        /// Offset of the last rating covered.
        through: i64,
    },
    /// The item states of this partition hold every delta up to `offset`
    /// of the deltas topic's partition of the same number.
    Merged {
        /// Batch model the states belong to.
        base: String,
        /// The deltas partition (the same as this one).
        partition: i32,
        /// Offset of the last delta batch merged.
        offset: i64,
    },
}

/// Positions by partition as `[[partition, offset], ...]`: JSON object keys
/// are strings, which a tagged enum cannot read back as numbers.
mod partition_pairs {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(map: &BTreeMap<i32, i64>, s: S) -> Result<S::Ok, S::Error> {
        let pairs: Vec<(i32, i64)> = map.iter().map(|(&p, &o)| (p, o)).collect();
        pairs.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<i32, i64>, D::Error> {
        Ok(Vec::<(i32, i64)>::deserialize(d)?.into_iter().collect())
    }
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
    /// The ratings a retrained model already holds (`recstream retrain`);
    /// learners re-learn, on top of it, only the ratings after them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covers: Option<Covers>,
}

/// The ratings a batch model was trained on, as positions in the ratings topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Covers {
    /// The ratings topic.
    pub ratings_topic: String,
    /// Per partition, the offset of the first rating the model does not hold.
    #[serde(with = "partition_pairs")]
    pub next: BTreeMap<i32, i64>,
}

impl ModelAnnouncement {
    /// Where `partition` of `ratings_topic` resumes on top of this model:
    /// `Some` only for a retrained model that covers that topic.
    pub fn resumes_at(&self, ratings_topic: &str, partition: i32) -> Option<i64> {
        let covers = self.covers.as_ref()?;
        if covers.ratings_topic != ratings_topic {
            return None;
        }
        Some(covers.next.get(&partition).copied().unwrap_or(0))
    }
}

impl ModelMessage {
    /// The compaction key.
    pub fn key(&self) -> String {
        match self {
            ModelMessage::User { state, .. } => format!("user:{}", state.id),
            ModelMessage::Item { state, .. } => format!("item:{}", state.id),
            ModelMessage::Model(_) => "model".to_string(),
            ModelMessage::Marker { .. } => "marker".to_string(),
            ModelMessage::Forwarded { .. } => "forwarded".to_string(),
            ModelMessage::Merged { .. } => "merged".to_string(),
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

/// The user state message of a learner update, numbered `seq` on its partition.
pub fn user_message(
    update: &Update,
    seq: u64,
    source: Option<Source>,
    rating_ts_ms: Option<i64>,
) -> ModelMessage {
    ModelMessage::User {
        seq,
        base: update.base_id.clone(),
        state: update.user.clone(),
        rated: update.user_rated.clone(),
        source,
        rating_ts_ms,
        item_delta: update.item_delta.clone(),
    }
}

/// The partition of the model and deltas topics that owns an item's merged
/// state: a hash of its raw id, so every learner agrees without asking.
pub fn item_partition(id: &RawId, partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    // The remainder is below `partitions`, which fits an i32.
    (crc32fast::hash(id.as_str().as_bytes()) % n) as i32
}

/// One source's item deltas for the items of one partition, on the deltas topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeltaMessage {
    /// Batch model the deltas apply to; a merger on another drops them.
    pub base: String,
    /// The deltas.
    #[serde(flatten)]
    pub batch: DeltaBatch,
}

impl DeltaMessage {
    /// The key: the source partition (deltas are partitioned by item).
    pub fn key(&self) -> String {
        format!("deltas:{}", self.batch.source)
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
            item_delta: Some(ItemDelta {
                id: RawId::new("242"),
                bias: 0.5,
                factors: vec![0.25; 4],
                count: 1,
            }),
        };
        let user = user_message(
            &update,
            7,
            Some(Source {
                partition: 2,
                offset: 40,
            }),
            Some(1_700_000_000_000),
        );
        let item = ModelMessage::Item {
            seq: 3,
            base: "abc".into(),
            state: state("242"),
            through: BTreeMap::from([(0, 4), (2, 40)]),
        };
        assert_eq!(item.key(), "item:242");
        assert_eq!(user.key(), "user:196");
        let checkpoints = [
            ModelMessage::Forwarded {
                base: "abc".into(),
                partition: 2,
                through: 40,
            },
            ModelMessage::Merged {
                base: "abc".into(),
                partition: 2,
                offset: 9,
            },
        ];
        for message in [item, user].into_iter().chain(checkpoints) {
            assert_eq!(ModelMessage::decode(&message.encode()).unwrap(), message);
        }
        let deltas = DeltaMessage {
            base: "abc".into(),
            batch: DeltaBatch {
                source: 2,
                through: 40,
                deltas: vec![],
            },
        };
        assert_eq!(DeltaMessage::decode(&deltas.encode()).unwrap(), deltas);
        assert_eq!(deltas.key(), "deltas:2");
        let announcement = ModelMessage::Model(ModelAnnouncement {
            id: "abc".into(),
            bytes: 10,
            sha256: "00".into(),
            files_topic: "model-files".into(),
            partition: 0,
            first_offset: 5,
            chunks: 1,
            covers: Some(Covers {
                ratings_topic: "rating-events".into(),
                next: BTreeMap::from([(0, 12), (3, 0)]),
            }),
        });
        assert_eq!(announcement.key(), "model");
        assert_eq!(
            ModelMessage::decode(&announcement.encode()).unwrap(),
            announcement
        );
        assert!(ModelMessage::decode(b"{\"type\":\"nonsense\"}").is_err());
    }

    #[test]
    fn a_retrained_model_says_where_each_ratings_partition_resumes() {
        let old = br#"{"type":"model","id":"m","bytes":1,"sha256":"00","files_topic":"f","partition":0,"first_offset":0,"chunks":1}"#;
        let Ok(ModelMessage::Model(plain)) = ModelMessage::decode(old) else {
            panic!("an announcement from before retrains still reads");
        };
        assert_eq!(plain.resumes_at("rating-events", 0), None);
        let retrained = ModelAnnouncement {
            covers: Some(Covers {
                ratings_topic: "rating-events".into(),
                next: BTreeMap::from([(0, 12)]),
            }),
            ..plain
        };
        assert_eq!(retrained.resumes_at("rating-events", 0), Some(12));
        // A partition the retrain did not see: none of its ratings are in.
        assert_eq!(retrained.resumes_at("rating-events", 1), Some(0));
        assert_eq!(retrained.resumes_at("other-ratings", 0), None);
    }

    #[test]
    fn states_written_before_partitions_still_read() {
        let old = br#"{"type":"item","seq":1,"base":"abc","state":{"id":"1","bias":0.5,"factors":[0.1],"count":2}}"#;
        let Ok(ModelMessage::Item { through, .. }) = ModelMessage::decode(old) else {
            panic!("an item state without positions reads");
        };
        assert!(through.is_empty());
    }

    #[test]
    fn every_learner_puts_an_item_on_the_same_partition_of_every_topic() {
        let id = RawId::new("242");
        let p = item_partition(&id, 8);
        assert!((0..8).contains(&p));
        assert_eq!(p, item_partition(&id, 8));
        assert_eq!(item_partition(&id, 1), 0);
        assert_eq!(item_partition(&id, 0), 0, "no partitions is one");
        let spread: std::collections::BTreeSet<i32> = (0..200)
            .map(|i| item_partition(&RawId::new(i.to_string()), 8))
            .collect();
        assert_eq!(spread.len(), 8, "items spread over every partition");
    }
}
