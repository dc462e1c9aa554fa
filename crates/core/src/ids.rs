//! Raw ids as the data files spell them, and their mapping to dense indices.
//!
//! MovieLens tools treat user and item ids as opaque strings, while most
//! people type them as numbers (`{"uid": 196}`). We keep every id exactly as
//! it was written in the ratings file, map it to a dense `u32` index for the
//! matrices, and print it back as a JSON number only when the text is a
//! canonical integer (so `"007"` stays a string and round-trips unchanged).

use std::collections::HashMap;
use std::fmt;

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

/// Parses `text` as an integer only when printing that integer gives `text` back.
fn canonical_int(text: &str) -> Option<i64> {
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IdMap {
    raw: Vec<RawId>,
    index: HashMap<RawId, u32>,
}

impl IdMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a map from ids listed in dense-index order. Duplicates are an error
    /// (returned as the offending id) because they would break the bijection.
    pub fn from_ordered(ids: Vec<RawId>) -> Result<Self, RawId> {
        let mut index = HashMap::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            if index.insert(id.clone(), i as u32).is_some() {
                return Err(id.clone());
            }
        }
        Ok(IdMap { raw: ids, index })
    }

    /// The dense index of `raw`, assigning the next free one when it is new.
    pub fn intern(&mut self, raw: &str) -> u32 {
        if let Some(&i) = self.index.get(raw) {
            return i;
        }
        let i = self.raw.len() as u32;
        let id = RawId::new(raw);
        self.raw.push(id.clone());
        self.index.insert(id, i);
        i
    }

    /// The dense index of an id, if known.
    pub fn get(&self, raw: &str) -> Option<u32> {
        self.index.get(raw).copied()
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
