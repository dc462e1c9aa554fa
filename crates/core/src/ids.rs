//! Raw ids as the data files spell them, and their mapping to dense indices.
//!
//! MovieLens tools treat user and item ids as opaque strings, while most
//! people type them as numbers (`{"uid": 196}`). We keep every id exactly as
//! it was written in the ratings file, map it to a dense `u32` index for the
//! matrices, and print it back as a JSON number only when the text is a
//! canonical integer (so `"007"` stays a string and round-trips unchanged).

use std::collections::HashMap;
use std::fmt;

/// foldhash with a per-process random seed: several times faster than the
/// default SipHash on short ids, still unpredictable to whoever sends them.
type IdHasher = foldhash::fast::RandomState;

/// An id exactly as written in a data file or a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RawId(Box<str>);

impl RawId {
    /// Wraps the text of an id. Surrounding whitespace is the caller's business.
    pub fn new(text: impl Into<Box<str>>) -> Self {
        RawId(text.into())
    }

    /// The id as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id as an integer when its text is the canonical decimal form of one
    /// (no sign other than `-`, no leading zeros, fits in `i64`).
    pub fn as_canonical_int(&self) -> Option<i64> {
        canonical_int(&self.0)
    }

    /// The JSON value that represents this id: a number for canonical integers,
    /// a string otherwise.
    pub fn to_json(&self) -> serde_json::Value {
        match self.as_canonical_int() {
            Some(n) => serde_json::Value::from(n),
            None => serde_json::Value::from(self.as_str()),
        }
    }
}

impl fmt::Display for RawId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for RawId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.as_canonical_int() {
            Some(n) => serializer.serialize_i64(n),
            None => serializer.serialize_str(self.as_str()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for RawId {
    /// Accepts what serialising writes: a string, or an integer for ids that are integers.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = RawId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id: a string or an integer")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawId, E> {
                Ok(RawId::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawId, E> {
                Ok(RawId::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawId, E> {
                Ok(RawId::new(v.to_string()))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Parses `text` as an integer only when printing that integer gives `text`
/// back: the ids that JSON carries as numbers.
pub fn canonical_int(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if digits.len() > 1 && digits.starts_with('0') {
        return None;
    }
    if text == "-0" {
        return None;
    }
    text.parse().ok()
}

/// A bijection between raw ids and dense indices `0..len`, in order of first appearance.
///
/// Most ids in rating data are small integers, so those skip hashing: a flat
/// table indexed by the integer gives the dense index directly. That is the
/// lookup every rating line and every request does.
#[derive(Debug, Clone, Default)]
pub struct IdMap {
    raw: Vec<RawId>,
    /// Dense index + 1 of each small canonical integer id (0 = not present).
    small: Vec<u32>,
    /// Every other id.
    index: HashMap<RawId, u32, IdHasher>,
}

/// Integer ids below this use the flat table (at most 16 MiB of it).
const SMALL_ID_LIMIT: usize = 1 << 22;

/// The value of a canonical decimal id below [`SMALL_ID_LIMIT`].
fn small_id(bytes: &[u8]) -> Option<usize> {
    match bytes {
        [] => None,
        [b'0'] => Some(0),
        [b'0', ..] => None,
        _ if bytes.len() > 7 => None,
        _ => {
            let mut n = 0usize;
            for &b in bytes {
                if !b.is_ascii_digit() {
                    return None;
                }
                n = n * 10 + usize::from(b - b'0');
            }
            (n < SMALL_ID_LIMIT).then_some(n)
        }
    }
}

impl IdMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from ids listed in dense-index order. Duplicates are an error
    /// (returned as the offending id) because they would break the bijection.
    pub fn from_ordered(ids: Vec<RawId>) -> Result<Self, RawId> {
        let mut map = IdMap {
            raw: Vec::with_capacity(ids.len()),
            ..IdMap::default()
        };
        for id in ids {
            let before = map.len();
            if map.intern(id.as_str()) as usize != before {
                return Err(id);
            }
        }
        Ok(map)
    }

    /// The dense index of `raw`, assigning the next free one when it is new.
    pub fn intern(&mut self, raw: &str) -> u32 {
        if let Some(n) = small_id(raw.as_bytes()) {
            if let Some(&slot) = self.small.get(n)
                && slot != 0
            {
                return slot - 1;
            }
            let i = self.push(raw);
            if self.small.len() <= n {
                self.small
                    .resize((n + 1).next_power_of_two().min(SMALL_ID_LIMIT), 0);
            }
            self.small[n] = i + 1;
            return i;
        }
        if let Some(&i) = self.index.get(raw) {
            return i;
        }
        let i = self.push(raw);
        self.index.insert(RawId::new(raw), i);
        i
    }

    /// As [`IdMap::intern`], for an id given as bytes; fails only when they
    /// are not UTF-8 (small integers are recognised without decoding).
    pub fn intern_bytes(&mut self, raw: &[u8]) -> Result<u32, std::str::Utf8Error> {
        if let Some(n) = small_id(raw)
            && let Some(&slot) = self.small.get(n)
            && slot != 0
        {
            return Ok(slot - 1);
        }
        Ok(self.intern(std::str::from_utf8(raw)?))
    }

    fn push(&mut self, raw: &str) -> u32 {
        let i = self.raw.len() as u32;
        self.raw.push(RawId::new(raw));
        i
    }

    /// The dense index of an id, if known.
    pub fn get(&self, raw: &str) -> Option<u32> {
        match small_id(raw.as_bytes()) {
            Some(n) => self.small.get(n).and_then(|&slot| slot.checked_sub(1)),
            None => self.index.get(raw).copied(),
        }
    }

    /// The raw id of a dense index.
    pub fn raw(&self, index: u32) -> Option<&RawId> {
        self.raw.get(index as usize)
    }

    /// Number of distinct ids.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// True when no id has been interned.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// All raw ids in dense-index order.
    pub fn ids(&self) -> &[RawId] {
        &self.raw
    }
}

impl PartialEq for IdMap {
    /// Two maps are equal when they list the same ids in the same order.
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl std::borrow::Borrow<str> for RawId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_integers_become_numbers_others_stay_strings() {
        assert_eq!(RawId::new("196").to_json(), serde_json::json!(196));
        assert_eq!(RawId::new("-3").to_json(), serde_json::json!(-3));
        assert_eq!(RawId::new("0").to_json(), serde_json::json!(0));
        for text in [
            "007",
            "-0",
            "+5",
            "1e3",
            "12a",
            "",
            "99999999999999999999",
            "tt0114709",
        ] {
            assert_eq!(
                RawId::new(text).to_json(),
                serde_json::json!(text),
                "{text:?}"
            );
        }
    }

    #[test]
    fn interning_assigns_dense_indices_in_first_seen_order() {
        let mut map = IdMap::new();
        assert_eq!(map.intern("b"), 0);
        assert_eq!(map.intern("a"), 1);
        assert_eq!(map.intern("b"), 0);
        assert_eq!(map.get("a"), Some(1));
        assert_eq!(map.get("c"), None);
        assert_eq!(map.raw(1).map(RawId::as_str), Some("a"));
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn small_integers_and_other_ids_live_side_by_side() {
        let mut map = IdMap::new();
        let ids = ["196", "0", "007", "4194304", "x", "4194303", "-1"];
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(map.intern(id), i as u32, "{id}");
        }
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(map.get(id), Some(i as u32), "{id}");
            assert_eq!(map.intern_bytes(id.as_bytes()), Ok(i as u32), "{id}");
            assert_eq!(map.raw(i as u32).map(RawId::as_str), Some(*id));
        }
        assert_eq!(map.get("7"), None);
        assert_eq!(map.get("195"), None);
        assert!(map.intern_bytes(b"\xff").is_err());
        let rebuilt = IdMap::from_ordered(map.ids().to_vec()).unwrap();
        assert_eq!(rebuilt, map);
        assert_eq!(rebuilt.get("4194303"), Some(5));
    }

    #[test]
    fn duplicate_ids_are_rejected_when_rebuilding() {
        let ids = vec![RawId::new("1"), RawId::new("2"), RawId::new("1")];
        assert_eq!(IdMap::from_ordered(ids), Err(RawId::new("1")));
    }

    proptest! {
        #[test]
        fn canonical_ints_round_trip_through_their_text(n in any::<i64>()) {
            prop_assert_eq!(RawId::new(n.to_string()).as_canonical_int(), Some(n));
        }

        #[test]
        fn ids_round_trip_through_json(text in "[-0-9a-z]{1,12}") {
            let id = RawId::new(text.as_str());
            let back: RawId = serde_json::from_str(&serde_json::to_string(&id).unwrap()).unwrap();
            prop_assert_eq!(back, id);
        }

        #[test]
        fn json_form_always_prints_back_to_the_raw_text(text in "[-0-9a-z]{0,12}") {
            let id = RawId::new(text.as_str());
            let printed = match id.to_json() {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s,
                other => panic!("unexpected {other}"),
            };
            prop_assert_eq!(printed, text);
        }
    }
}
