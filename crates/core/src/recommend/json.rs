//! Recommendations written straight to JSON: the serving hot path's output.
//!
//! Building owned [`Recommendations`](super::Recommendations) and then
//! serialising them costs two allocations per recommended item (its id and
//! title, cloned) and the escaping of every title, on every request. A
//! worker only needs the bytes of the `recommendations` array. So
//! [`ItemJson`] keeps, per item, the escaped start of its JSON object
//! (`{"iid":242,"title":"Kolya (1996)","score":`), made once when the item
//! first appears, and [`JsonAnswers`] receives each answer as those
//! fragments plus a formatted score, in one buffer reused from request to
//! request. The bytes are exactly what `serde_json` writes for the
//! recommendations (the tests compare them).

use std::ops::Range;

use crate::ids::RawId;
use crate::model::Model;

/// The start of each item's JSON object, up to its score.
#[derive(Debug, Clone, Default)]
pub(crate) struct ItemJson {
    bytes: Vec<u8>,
    /// Where each item's fragment ends in `bytes` (it starts where the
    /// previous one ends).
    ends: Vec<usize>,
}

impl ItemJson {
    /// The fragments of every item of `model`.
    pub(crate) fn build(model: &Model) -> Self {
        let mut json = ItemJson::default();
        json.extend_to(model);
        json
    }

    /// Adds the fragments of items added to `model` since (ids and titles
    /// never change once an item is known).
    pub(crate) fn extend_to(&mut self, model: &Model) {
        for item in self.ends.len()..model.items.len() {
            write_fragment(&mut self.bytes, model, item as u32);
            self.ends.push(self.bytes.len());
        }
    }

    fn get(&self, item: u32) -> Option<&[u8]> {
        let i = item as usize;
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.bytes.get(start..end)
    }

    /// Writes one recommendation: `{"iid":...,"title":...,"score":S}`.
    pub(crate) fn write(&self, out: &mut Vec<u8>, model: &Model, item: u32, score: f32) {
        match self.get(item) {
            Some(fragment) => out.extend_from_slice(fragment),
            // Not made yet (an item added without a refresh): write it now.
            None => write_fragment(out, model, item),
        }
        write_score(out, score);
        out.push(b'}');
    }
}

/// `{"iid":<id>,"title":<title>,"score":` for `item`.
fn write_fragment(out: &mut Vec<u8>, model: &Model, item: u32) {
    let empty = RawId::new("");
    let iid = model.items.raw(item).unwrap_or(&empty);
    let title = model.titles.get(item as usize).map_or("", String::as_str);
    out.extend_from_slice(b"{\"iid\":");
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, iid);
    out.extend_from_slice(b",\"title\":");
    let _ = serde_json::to_writer(&mut *out, title);
    out.extend_from_slice(b",\"score\":");
}

/// A score as a reply carries it: rounded to four decimals, written as
/// `serde_json` writes an `f64` (`null` when not finite).
pub(crate) fn write_score(out: &mut Vec<u8>, score: f32) {
    let rounded = super::round4(score);
    if rounded.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(rounded).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// One answer of a [`JsonAnswers`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonAnswer<'a> {
    /// The `recommendations` array, as JSON.
    pub recommendations: &'a [u8],
    /// True when the user is unknown and got the popular list.
    pub cold_start: bool,
}

/// Answers to a group of requests, as JSON, in one reusable buffer (see
/// [`Recommender::answer_many_json`](super::Recommender::answer_many_json)).
#[derive(Debug, Clone, Default)]
pub struct JsonAnswers {
    bytes: Vec<u8>,
    answers: Vec<(Range<usize>, bool)>,
}

impl JsonAnswers {
    /// Forgets the answers, keeping the storage.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        self.answers.clear();
    }

    /// Writes one answer: `write` appends its items (each through
    /// [`ItemJson::write`]), which this brackets and separates.
    pub(crate) fn push(&mut self, cold_start: bool, write: impl FnOnce(&mut ItemWriter<'_>)) {
        let start = self.bytes.len();
        self.bytes.push(b'[');
        write(&mut ItemWriter {
            out: &mut self.bytes,
            first: true,
        });
        self.bytes.push(b']');
        self.answers.push((start..self.bytes.len(), cold_start));
    }

    /// Number of answers.
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// True when there are no answers.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The `i`-th answer, in the order of the requests.
    pub fn get(&self, i: usize) -> Option<JsonAnswer<'_>> {
        let (range, cold_start) = self.answers.get(i)?;
        Some(JsonAnswer {
            recommendations: self.bytes.get(range.clone())?,
            cold_start: *cold_start,
        })
    }
}

/// Appends the items of one answer, comma-separated.
pub(crate) struct ItemWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl ItemWriter<'_> {
    /// Appends `item` with its (clipped) `score`.
    pub(crate) fn item(&mut self, json: &ItemJson, model: &Model, item: u32, score: f32) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        json.write(self.out, model, item, score);
    }
}
