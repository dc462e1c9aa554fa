//! Topics: names, configs and their partitions' logs.
//!
//! A topic's partition count never changes after creation (no
//! CreatePartitions), so a partition is addressed by topic name and index.
//! Configs are kept as given at creation, to be described back; the broker
//! itself acts only on its own retention setting.

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;

use crate::log::PartitionLog;

/// Kafka's longest topic name.
const MAX_NAME: usize = 249;

/// One topic.
#[derive(Debug)]
pub struct Topic {
    /// Its partitions, by index.
    pub partitions: Vec<PartitionLog>,
    /// Configs given at creation.
    pub configs: BTreeMap<String, String>,
}

/// Every topic of the broker.
#[derive(Debug, Default)]
pub struct Topics {
    topics: BTreeMap<String, Topic>,
}

/// Kafka's rule for topic names: 1-249 of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

impl Topics {
    /// Creates `name`, or says why not.
    pub fn create(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
        retention_bytes: u64,
        validate_only: bool,
    ) -> Result<(), ResponseError> {
        if !valid_name(name) {
            return Err(ResponseError::InvalidTopicException);
        }
        if self.topics.contains_key(name) {
            return Err(ResponseError::TopicAlreadyExists);
        }
        // A cap so that a request cannot make the broker allocate millions
        // of partitions.
        if !(1..=10_000).contains(&partitions) {
            return Err(ResponseError::InvalidPartitions);
        }
        if !validate_only {
            let logs = (0..partitions)
                .map(|_| PartitionLog::new(retention_bytes))
                .collect();
            self.topics.insert(
                name.to_string(),
                Topic {
                    partitions: logs,
                    configs,
                },
            );
        }
        Ok(())
    }

    /// A topic.
    pub fn get(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    /// A partition, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn partition(&self, topic: &str, index: i32) -> Result<&PartitionLog, ResponseError> {
        self.topics
            .get(topic)
            .and_then(|t| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| t.partitions.get(i))
            })
            .ok_or(ResponseError::UnknownTopicOrPartition)
    }

    /// A partition to write, or UNKNOWN_TOPIC_OR_PARTITION.
    pub fn partition_mut(
        &mut self,
        topic: &str,
        index: i32,
    ) -> Result<&mut PartitionLog, ResponseError> {
        self.topics
            .get_mut(topic)
            .and_then(|t| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| t.partitions.get_mut(i))
            })
            .ok_or(ResponseError::UnknownTopicOrPartition)
    }

    /// Every topic, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Topic)> {
        self.topics.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafkas_rule() {
        assert!(valid_name("rating-events_v2.x"));
        for bad in ["", ".", "..", "a b", "é", &"x".repeat(250)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn partition_counts_are_bounded_and_names_unique() {
        let mut t = Topics::default();
        assert_eq!(
            t.create("a", 0, BTreeMap::new(), 1, false),
            Err(ResponseError::InvalidPartitions)
        );
        t.create("a", 2, BTreeMap::new(), 1, false).unwrap();
        assert_eq!(
            t.create("a", 2, BTreeMap::new(), 1, false),
            Err(ResponseError::TopicAlreadyExists)
        );
        t.create("b", 2, BTreeMap::new(), 1, true).unwrap();
        assert!(t.get("b").is_none(), "validate_only creates nothing");
        assert!(t.partition("a", 1).is_ok());
        assert!(t.partition("a", 2).is_err());
        assert!(t.partition("a", -1).is_err());
    }
}
