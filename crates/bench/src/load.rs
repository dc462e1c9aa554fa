//! Synthetic request load: requests for random users.
//!
//! `recstream produce --uids FIRST..LAST` and the benchmark scripts use this
//! to load a worker the way many independent clients would: every request
//! is for a uniformly random user in the range (so that no cache of one
//! user's answer flatters the figures), keyed by user like a real client's,
//! with a numbered `request_id` so that `bench replies` can count distinct
//! answers. Pacing, batching and the handling of send errors are the
//! operator tool's (`produce_paced`, on Kafka or Kinesis), so a generated
//! load and a replayed file reach the broker the same way.

use rand::Rng;

/// A generated request load.
#[derive(Debug, Clone)]
pub struct Load {
    /// Lowest user id.
    pub first_uid: u64,
    /// Highest user id.
    pub last_uid: u64,
    /// How many requests.
    pub count: u64,
    /// Prefix of the generated `request_id`s (`<prefix>-<n>`).
    pub id_prefix: String,
}

impl Load {
    /// The `(key, payload)` of each request, drawing users from `rng`:
    /// `{"uid": U, "request_id": "<prefix>-<n>"}`, keyed by `U`.
    pub fn requests<R: Rng>(
        &self,
        mut rng: R,
    ) -> impl Iterator<Item = (Option<Vec<u8>>, Vec<u8>)> + use<R> {
        let (first, last) = (self.first_uid, self.last_uid.max(self.first_uid));
        let prefix = self.id_prefix.clone();
        (0..self.count).map(move |n| {
            let uid = rng.random_range(first..=last);
            let payload = format!(r#"{{"uid":{uid},"request_id":"{prefix}-{n}"}}"#);
            (Some(uid.to_string().into_bytes()), payload.into_bytes())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn requests_are_numbered_keyed_by_user_and_within_the_range() {
        let load = Load {
            first_uid: 5,
            last_uid: 7,
            count: 200,
            id_prefix: "load".into(),
        };
        let requests: Vec<_> = load.requests(StdRng::seed_from_u64(1)).collect();
        assert_eq!(requests.len(), 200);
        for (n, (key, payload)) in requests.iter().enumerate() {
            let value: serde_json::Value = serde_json::from_slice(payload).unwrap();
            let uid = value["uid"].as_u64().unwrap();
            assert!((5..=7).contains(&uid), "{value}");
            assert_eq!(key.as_deref(), Some(uid.to_string().as_bytes()));
            assert_eq!(value["request_id"], format!("load-{n}"));
        }
    }

    #[test]
    fn a_reversed_range_asks_for_the_first_user_only() {
        let load = Load {
            first_uid: 9,
            last_uid: 3,
            count: 20,
            id_prefix: "x".into(),
        };
        assert!(
            load.requests(StdRng::seed_from_u64(2))
                .all(|(key, _)| key.as_deref() == Some(b"9".as_slice()))
        );
    }
}
