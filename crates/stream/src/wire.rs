//! The wire contract: what a request, a reply and a dead letter look like on Kafka.
//!
//! Every input message becomes either a [`Request`] or a [`Rejection`] — never
//! a panic and never a silent drop. Requests are `{"uid": 196}` with `uid` a
//! JSON number or string, optional `n` (1 to 100) and optional `request_id`
//! (any JSON value, echoed back). Replies extend the core's
//! [`Recommendations`](recstream_core::Recommendations) with that `request_id`, written by hand
//! ([`write_reply`]) around the answer's JSON from the core, byte for byte
//! what serialising them writes. Requests are read borrowed from the
//! message: the usual ones (integer or plain-string ids) cost no allocation;
//! anything else goes through a full JSON parse, which also names what is
//! wrong with a bad one. Rejections go to the
//! dead-letter topic as a [`DeadLetter`] that carries the reason and the
//! original bytes losslessly (as text when they are UTF-8, base64 otherwise),
//! so nothing is lost and a fixed producer can replay them.

use std::borrow::Cow;

use base64::Engine;
use recstream_core::RawId;
use recstream_core::ids::canonical_int;
use recstream_core::recommend::MAX_N;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// Largest request accepted, in bytes; anything larger is dead-lettered.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Largest dead letter written, in bytes: half of Kafka's default 1 MiB
/// message limit (and of librdkafka's `message.max.bytes`), leaving room
/// for the key and headers. A dead letter whose payload would not fit
/// carries a prefix of it and `"truncated": true`, so an oversized or
/// badly escaped message can never block its partition.
pub const MAX_DEAD_LETTER_BYTES: usize = 512 * 1024;

/// The size a dead letter is cut to when even a [`MAX_DEAD_LETTER_BYTES`]
/// one was refused by the broker (a topic with a small `max.message.bytes`).
pub const MIN_DEAD_LETTER_BYTES: usize = 4 * 1024;

/// A valid recommendation request, borrowing from the message when it can.
#[derive(Debug, Clone, PartialEq)]
pub struct Request<'a> {
    /// The user id, as text (numbers are printed canonically).
    pub uid: Cow<'a, str>,
    /// How many recommendations, if the request says.
    pub n: Option<usize>,
    /// Echoed back in the reply: the JSON text of the request's
    /// `request_id` as `serde_json` writes it (`None` when absent or null).
    pub request_id: Option<Cow<'a, str>>,
}

/// Why a message is not a valid request. The `code` names the reason in
/// metrics and dead letters; the message explains it to a person.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// Short machine-readable reason.
    pub code: RejectCode,
    /// Human-readable explanation.
    pub message: String,
}

/// Machine-readable rejection reasons (the `reason` label of the dead-letter metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// No payload at all (a tombstone).
    Empty,
    /// Larger than the size limit.
    TooLarge,
    /// Not valid UTF-8.
    NotUtf8,
    /// Not JSON.
    InvalidJson,
    /// JSON, but not an object.
    NotAnObject,
    /// No `uid` field.
    MissingUid,
    /// `uid` is not an integer or a non-empty string.
    InvalidUid,
    /// `n` is not an integer from 1 to 100.
    InvalidN,
    /// A rating event without `iid`.
    MissingIid,
    /// `iid` is not an integer or a non-empty string.
    InvalidIid,
    /// A rating event without a numeric `rating`, or one outside the model's scale.
    InvalidRating,
    /// `ts` is not an integer.
    InvalidTs,
    /// A rating on a ratings topic of several partitions whose Kafka key
    /// is not its uid: its user's ratings may be spread over partitions,
    /// and so over learners that would each write the user's state.
    NotKeyedByUser,
    /// The reply could not be delivered (too large for the output topic,
    /// say); the dead letter carries the reply, truncated if need be.
    Undeliverable,
}

impl RejectCode {
    /// The code as it appears in metrics and dead letters.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectCode::Empty => "empty",
            RejectCode::TooLarge => "too_large",
            RejectCode::NotUtf8 => "not_utf8",
            RejectCode::InvalidJson => "invalid_json",
            RejectCode::NotAnObject => "not_an_object",
            RejectCode::MissingUid => "missing_uid",
            RejectCode::InvalidUid => "invalid_uid",
            RejectCode::InvalidN => "invalid_n",
            RejectCode::MissingIid => "missing_iid",
            RejectCode::InvalidIid => "invalid_iid",
            RejectCode::InvalidRating => "invalid_rating",
            RejectCode::InvalidTs => "invalid_ts",
            RejectCode::NotKeyedByUser => "not_keyed_by_user",
            RejectCode::Undeliverable => "undeliverable",
        }
    }

    /// Every code, for pre-registering metrics.
    pub const ALL: [RejectCode; 14] = [
        RejectCode::Empty,
        RejectCode::TooLarge,
        RejectCode::NotUtf8,
        RejectCode::InvalidJson,
        RejectCode::NotAnObject,
        RejectCode::MissingUid,
        RejectCode::InvalidUid,
        RejectCode::InvalidN,
        RejectCode::MissingIid,
        RejectCode::InvalidIid,
        RejectCode::InvalidRating,
        RejectCode::InvalidTs,
        RejectCode::NotKeyedByUser,
        RejectCode::Undeliverable,
    ];
}

fn reject(code: RejectCode, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// A rating event: `{"uid": 196, "iid": 242, "rating": 3.0, "ts": 881250949}`.
#[derive(Debug, Clone, PartialEq)]
pub struct RatingEvent {
    /// The user.
    pub uid: RawId,
    /// The item.
    pub iid: RawId,
    /// The rating (its range is checked against the model by the learner).
    pub rating: f32,
    /// Unix time in seconds, when given.
    pub ts: Option<i64>,
}

/// Parses a rating read from a ratings topic of `partitions` partitions.
/// With several, the message must be keyed by its uid, so that all of a
/// user's ratings are on one partition (see the learner); a rating that is
/// not is refused with [`RejectCode::NotKeyedByUser`].
pub fn parse_keyed_rating(
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    max_bytes: usize,
    partitions: usize,
) -> Result<RatingEvent, Rejection> {
    let event = parse_rating(payload, max_bytes)?;
    if partitions > 1 && key != Some(event.uid.as_str().as_bytes()) {
        return Err(reject(
            RejectCode::NotKeyedByUser,
            format!(
                "a rating must be keyed by its uid ({:?}) when the ratings topic has several partitions, so that all of a user's ratings reach the one learner that owns the user (recstream produce --ratings keys them so)",
                event.uid.as_str()
            ),
        ));
    }
    Ok(event)
}

/// Parses a rating event payload.
pub fn parse_rating(payload: Option<&[u8]>, max_bytes: usize) -> Result<RatingEvent, Rejection> {
    let mut fields = json_object(payload, max_bytes)?;
    let uid = id_field(
        &mut fields,
        "uid",
        RejectCode::MissingUid,
        RejectCode::InvalidUid,
    )?;
    let iid = id_field(
        &mut fields,
        "iid",
        RejectCode::MissingIid,
        RejectCode::InvalidIid,
    )?;
    let rating = match fields.remove("rating") {
        Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite()).map(|v| v as f32),
        _ => None,
    }
    .ok_or_else(|| reject(RejectCode::InvalidRating, "\"rating\" must be a number"))?;
    let ts = match fields.remove("ts") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
        Some(other) => {
            return Err(reject(
                RejectCode::InvalidTs,
                format!(
                    "\"ts\" must be an integer (Unix seconds), got {}",
                    describe(&other)
                ),
            ));
        }
    };
    Ok(RatingEvent {
        uid,
        iid,
        rating,
        ts,
    })
}

/// An id field: a JSON integer or a non-empty string.
fn id_field(
    fields: &mut serde_json::Map<String, Value>,
    name: &str,
    missing: RejectCode,
    invalid: RejectCode,
) -> Result<RawId, Rejection> {
    match fields.remove(name) {
        None | Some(Value::Null) => Err(reject(missing, format!("no \"{name}\" field"))),
        Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(RawId::new(n.to_string())),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(RawId::new(s)),
        Some(other) => Err(reject(
            invalid,
            format!(
                "\"{name}\" must be an integer or a non-empty string, got {}",
                describe(&other)
            ),
        )),
    }
}

/// The JSON object in a payload, or why there is none.
fn json_object(
    payload: Option<&[u8]>,
    max_bytes: usize,
) -> Result<serde_json::Map<String, Value>, Rejection> {
    let bytes = match payload {
        None | Some([]) => return Err(reject(RejectCode::Empty, "empty message")),
        Some(b) => b,
    };
    if bytes.len() > max_bytes {
        return Err(reject(
            RejectCode::TooLarge,
            format!(
                "message of {} bytes exceeds the {max_bytes}-byte limit",
                bytes.len()
            ),
        ));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| {
        reject(
            RejectCode::NotUtf8,
            format!("not UTF-8 (invalid byte at {})", e.valid_up_to()),
        )
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| reject(RejectCode::InvalidJson, format!("not JSON: {e}")))?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(reject(RejectCode::NotAnObject, "expected a JSON object")),
    }
}

/// Parses a request payload (`None` is a Kafka tombstone).
pub fn parse_request(payload: Option<&[u8]>, max_bytes: usize) -> Result<Request<'_>, Rejection> {
    match payload {
        Some(bytes) if !bytes.is_empty() && bytes.len() <= max_bytes => {
            match std::str::from_utf8(bytes).ok().and_then(plain_request) {
                Some(request) => Ok(request),
                None => parse_request_fully(payload, max_bytes),
            }
        }
        _ => parse_request_fully(payload, max_bytes),
    }
}

/// The fields of a request, borrowed as raw JSON.
#[derive(serde::Deserialize)]
struct RawRequest<'a> {
    #[serde(borrow)]
    uid: Option<&'a RawValue>,
    #[serde(borrow)]
    n: Option<&'a RawValue>,
    #[serde(borrow)]
    request_id: Option<&'a RawValue>,
}

/// A request whose fields are all of the usual kinds, read without
/// allocating: an integer or plain string `uid`, `n` from 1 to 100, an
/// integer or plain string `request_id`. `None` for anything else (other
/// kinds, escapes, duplicate fields, bad input), which
/// [`parse_request_fully`] then reads or rejects, so both give the same
/// answer for every input.
fn plain_request(text: &str) -> Option<Request<'_>> {
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let raw: RawRequest<'_> = serde_json::from_str(text).ok()?;
    let uid = raw.uid?.get();
    let uid = match plain_string(uid) {
        Some(s) if !s.trim().is_empty() => s,
        Some(_) => return None,
        None => plain_integer(uid)?,
    };
    let n = match raw.n {
        None => None,
        Some(n) => Some(
            n.get()
                .parse::<usize>()
                .ok()
                .filter(|v| (1..=MAX_N).contains(v))?,
        ),
    };
    let request_id = match raw.request_id {
        None => None,
        Some(id) => {
            let id = id.get();
            plain_string(id).or_else(|| plain_integer(id))?;
            Some(Cow::Borrowed(id))
        }
    };
    Some(Request {
        uid: Cow::Borrowed(uid),
        n,
        request_id,
    })
}

/// The contents of a JSON string token without escapes.
fn plain_string(token: &str) -> Option<&str> {
    let inner = token.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['\\', '"'])).then_some(inner)
}

/// A JSON integer token that `serde_json` reads as a 64-bit integer and
/// writes back as the same text (`-0` is written `0`; larger integers are
/// floats).
fn plain_integer(token: &str) -> Option<&str> {
    let digits = token.strip_prefix('-').unwrap_or(token);
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && token != "-0";
    let fits = token.parse::<i64>().is_ok() || token.parse::<u64>().is_ok();
    (canonical && fits).then_some(token)
}

/// Parses a request payload with a full JSON parse, rejecting it with the
/// reason when it is not a valid request.
fn parse_request_fully(
    payload: Option<&[u8]>,
    max_bytes: usize,
) -> Result<Request<'static>, Rejection> {
    let mut fields = json_object(payload, max_bytes).map_err(|mut r| {
        if r.code == RejectCode::NotAnObject {
            r.message = "expected a JSON object like {\"uid\": 196}".into();
        }
        r
    })?;
    let uid = id_field(
        &mut fields,
        "uid",
        RejectCode::MissingUid,
        RejectCode::InvalidUid,
    )?;
    let n = match fields.remove("n") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (1..=MAX_N as u64).contains(&v) => Some(v as usize),
            _ => {
                return Err(reject(
                    RejectCode::InvalidN,
                    format!("\"n\" must be an integer from 1 to {MAX_N}, got {n}"),
                ));
            }
        },
        Some(other) => {
            return Err(reject(
                RejectCode::InvalidN,
                format!(
                    "\"n\" must be an integer from 1 to {MAX_N}, got {}",
                    describe(&other)
                ),
            ));
        }
    };
    let request_id = match fields.remove("request_id") {
        None | Some(Value::Null) => None,
        Some(id) => Some(Cow::Owned(id.to_string())),
    };
    Ok(Request {
        uid: Cow::Owned(String::from(uid.as_str())),
        n,
        request_id,
    })
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// Writes the reply to `request` into `out`: `{"uid":..,"request_id":..,
/// "recommendations":..,"model_version":..,"cold_start":..}`, the uid as a
/// JSON number when it is a canonical integer, `request_id` echoed (`null`
/// when absent), `recommendations` the core's JSON for the answer.
pub fn write_reply(
    out: &mut Vec<u8>,
    request: &Request<'_>,
    recommendations: &[u8],
    model_version: &str,
    cold_start: bool,
) {
    out.extend_from_slice(b"{\"uid\":");
    write_id(out, &request.uid);
    out.extend_from_slice(b",\"request_id\":");
    match &request.request_id {
        Some(id) => out.extend_from_slice(id.as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"recommendations\":");
    out.extend_from_slice(recommendations);
    out.extend_from_slice(b",\"model_version\":");
    write_string(out, model_version);
    out.extend_from_slice(if cold_start {
        b",\"cold_start\":true}"
    } else {
        b",\"cold_start\":false}"
    });
}

/// An id as [`RawId`] serialises it: a number when canonical, a string otherwise.
fn write_id(out: &mut Vec<u8>, id: &str) {
    if canonical_int(id).is_some() {
        out.extend_from_slice(id.as_bytes());
    } else {
        write_string(out, id);
    }
}

/// A JSON string, escaped as `serde_json` escapes it.
fn write_string(out: &mut Vec<u8>, text: &str) {
    // Writing JSON into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

/// Where a rejected message came from.
#[derive(Debug, Clone, Serialize)]
pub struct Origin<'a> {
    /// Input topic.
    pub topic: &'a str,
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
}

/// A dead letter: the reason, where the message came from, and its bytes.
#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    /// Human-readable reason.
    pub error: &'a str,
    /// Machine-readable reason.
    pub reason: RejectCode,
    /// Input topic.
    pub topic: &'a str,
    /// Input partition.
    pub partition: i32,
    /// Input offset.
    pub offset: i64,
    /// The original payload: text when it was UTF-8, base64 otherwise.
    pub payload: Option<String>,
    /// `"utf8"` or `"base64"`, saying how to read `payload`.
    pub payload_encoding: &'static str,
    /// Present and true when `payload` is only a prefix of the message.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Length of the whole original message, when `payload` is truncated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_bytes: Option<usize>,
}

/// Serialises the dead letter for a rejected message, at most
/// [`MAX_DEAD_LETTER_BYTES`] long.
pub fn encode_dead_letter(
    rejection: &Rejection,
    origin: &Origin<'_>,
    payload: Option<&[u8]>,
) -> Vec<u8> {
    encode_dead_letter_within(rejection, origin, payload, MAX_DEAD_LETTER_BYTES)
}

/// A dead letter written by [`encode_dead_letter`], read back.
#[derive(Debug, serde::Deserialize)]
struct WrittenLetter {
    error: String,
    reason: RejectCode,
    topic: String,
    partition: i32,
    offset: i64,
    payload: Option<String>,
    payload_encoding: String,
    payload_bytes: Option<usize>,
}

/// The same dead letter cut to at most `max_bytes`, or `None` when it is
/// not longer than that already (or is not a dead letter of ours).
pub fn shrink_dead_letter(letter: &[u8], max_bytes: usize) -> Option<Vec<u8>> {
    if letter.len() <= max_bytes {
        return None;
    }
    let written: WrittenLetter = serde_json::from_slice(letter).ok()?;
    let payload = match (&written.payload, written.payload_encoding.as_str()) {
        (Some(text), "base64") => base64::engine::general_purpose::STANDARD.decode(text).ok(),
        (Some(text), _) => Some(text.as_bytes().to_vec()),
        (None, _) => None,
    };
    let rejection = Rejection {
        code: written.reason,
        message: written.error,
    };
    let origin = Origin {
        topic: &written.topic,
        partition: written.partition,
        offset: written.offset,
    };
    let total = written
        .payload_bytes
        .unwrap_or(payload.as_ref().map_or(0, Vec::len));
    let shrunk = within(&rejection, &origin, payload.as_deref(), total, max_bytes);
    (shrunk.len() < letter.len()).then_some(shrunk)
}

/// Serialises a dead letter of at most `max_bytes` (never less than what
/// the reason and the position need): the whole payload when it fits, the
/// longest prefix that fits otherwise, with `"truncated": true`.
pub fn encode_dead_letter_within(
    rejection: &Rejection,
    origin: &Origin<'_>,
    payload: Option<&[u8]>,
    max_bytes: usize,
) -> Vec<u8> {
    let total = payload.map_or(0, <[u8]>::len);
    within(rejection, origin, payload, total, max_bytes)
}

/// [`encode_dead_letter_within`] for a payload that may itself be a prefix
/// of a message `total` bytes long.
fn within(
    rejection: &Rejection,
    origin: &Origin<'_>,
    payload: Option<&[u8]>,
    total: usize,
    max_bytes: usize,
) -> Vec<u8> {
    let whole = letter_with_prefix(rejection, origin, payload, total, usize::MAX);
    let Some(bytes) = payload.filter(|_| whole.len() > max_bytes) else {
        return whole;
    };
    // Escaping (up to 6x) and base64 (4/3) make the encoded size a
    // non-linear function of the prefix: search for the longest that fits.
    let (mut fits, mut too_long) = (0usize, bytes.len());
    while too_long - fits > 1 {
        let mid = fits + (too_long - fits) / 2;
        if letter_with_prefix(rejection, origin, payload, total, mid).len() <= max_bytes {
            fits = mid;
        } else {
            too_long = mid;
        }
    }
    letter_with_prefix(rejection, origin, payload, total, fits)
}

/// The dead letter with at most `limit` bytes of the payload (cut at a
/// character boundary when the payload is text), of a message `total`
/// bytes long.
fn letter_with_prefix(
    rejection: &Rejection,
    origin: &Origin<'_>,
    payload: Option<&[u8]>,
    total: usize,
    limit: usize,
) -> Vec<u8> {
    let (text, payload_encoding, kept) = match payload {
        None => (None, "utf8", 0),
        Some(bytes) => {
            let cut = &bytes[..limit.min(bytes.len())];
            match std::str::from_utf8(bytes) {
                Ok(_) => {
                    let text = match std::str::from_utf8(cut) {
                        Ok(text) => text,
                        // A cut in the middle of a character: drop its first bytes.
                        Err(e) => std::str::from_utf8(&cut[..e.valid_up_to()]).unwrap_or(""),
                    };
                    (Some(text.to_string()), "utf8", text.len())
                }
                Err(_) => (
                    Some(base64::engine::general_purpose::STANDARD.encode(cut)),
                    "base64",
                    cut.len(),
                ),
            }
        }
    };
    let truncated = kept < total;
    let letter = DeadLetter {
        error: &rejection.message,
        reason: rejection.code,
        topic: origin.topic,
        partition: origin.partition,
        offset: origin.offset,
        payload: text,
        payload_encoding,
        truncated,
        payload_bytes: truncated.then_some(total),
    };
    serde_json::to_vec(&letter).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Request<'_>, Rejection> {
        parse_request(Some(text.as_bytes()), DEFAULT_MAX_REQUEST_BYTES)
    }

    fn code(text: &str) -> RejectCode {
        parse(text).unwrap_err().code
    }

    #[test]
    fn accepts_numbers_strings_n_and_request_ids() {
        assert_eq!(parse(r#"{"uid":196}"#).unwrap().uid, "196");
        assert_eq!(parse(r#"{"uid":"196"}"#).unwrap().uid, "196");
        assert_eq!(parse(r#"{"uid":"u-7"}"#).unwrap().uid, "u-7");
        let r = parse(r#"{"uid": 5, "n": 3, "request_id": "abc", "extra": true}"#).unwrap();
        assert_eq!((r.n, r.request_id.as_deref()), (Some(3), Some(r#""abc""#)));
        let r = parse(r#"{"uid": 5, "request_id": {"trace": [1, 2]}}"#).unwrap();
        assert_eq!(r.request_id.as_deref(), Some(r#"{"trace":[1,2]}"#));
        let r = parse(r#"{"uid": "caf\u00e9", "request_id": null}"#).unwrap();
        assert_eq!((&*r.uid, r.request_id), ("café", None));
    }

    /// JSON values of every kind a request field may hold, the tricky ones
    /// included: escapes, `-0`, integers past 64 bits, floats, blanks.
    const VALUES: [&str; 20] = [
        "196",
        "0",
        "-7",
        "-0",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775808",
        "1.5",
        "1e2",
        "100",
        "101",
        "null",
        "true",
        r#""196""#,
        r#""u \"7\"""#,
        r#""caf\u00e9""#,
        r#"" ""#,
        r#""""#,
        "[1]",
        r#"{"a": [1, {"b": null}]}"#,
    ];

    /// A request object from fields picked by `picks` (field, value), duplicates possible.
    fn object(picks: &[(usize, usize)]) -> String {
        let fields: Vec<String> = picks
            .iter()
            .map(|&(f, v)| {
                let name = ["uid", "n", "request_id", "other"][f % 4];
                format!("\"{name}\": {}", VALUES[v % VALUES.len()])
            })
            .collect();
        format!("{{{}}}", fields.join(", "))
    }

    #[test]
    fn the_usual_requests_are_read_without_a_full_parse() {
        for text in [
            r#"{"uid":196}"#,
            r#"{"uid": "u-7", "n": 5, "request_id": "r-1", "extra": [1]}"#,
            r#" {"request_id": 42, "uid": -3}"#,
        ] {
            let plain = plain_request(text).expect(text);
            assert!(matches!(plain.uid, Cow::Borrowed(_)), "{text}");
            assert_eq!(Ok(plain), parse(text).map_err(|r| r.code));
        }
        for text in [
            r#"{"uid": "caf\u00e9"}"#,
            r#"{"uid": 1, "uid": 2}"#,
            "[196]",
        ] {
            assert!(plain_request(text).is_none(), "{text}");
        }
    }

    #[test]
    fn rejects_each_kind_of_bad_input_with_its_code() {
        assert_eq!(parse_request(None, 10).unwrap_err().code, RejectCode::Empty);
        assert_eq!(
            parse_request(Some(b""), 10).unwrap_err().code,
            RejectCode::Empty
        );
        assert_eq!(
            parse_request(Some(&[b' '; 11]), 10).unwrap_err().code,
            RejectCode::TooLarge
        );
        assert_eq!(
            parse_request(Some(b"\xff\xfe"), 10).unwrap_err().code,
            RejectCode::NotUtf8
        );
        assert_eq!(code("{uid:196"), RejectCode::InvalidJson);
        assert_eq!(code("[196]"), RejectCode::NotAnObject);
        assert_eq!(code("196"), RejectCode::NotAnObject);
        assert_eq!(code(r#"{"user":196}"#), RejectCode::MissingUid);
        assert_eq!(code(r#"{"uid":null}"#), RejectCode::MissingUid);
        assert_eq!(code(r#"{"uid":1.5}"#), RejectCode::InvalidUid);
        assert_eq!(code(r#"{"uid":true}"#), RejectCode::InvalidUid);
        assert_eq!(code(r#"{"uid":""}"#), RejectCode::InvalidUid);
        assert_eq!(code(r#"{"uid":[1]}"#), RejectCode::InvalidUid);
        assert_eq!(code(r#"{"uid":1,"n":0}"#), RejectCode::InvalidN);
        assert_eq!(code(r#"{"uid":1,"n":101}"#), RejectCode::InvalidN);
        assert_eq!(code(r#"{"uid":1,"n":-3}"#), RejectCode::InvalidN);
        assert_eq!(code(r#"{"uid":1,"n":"5"}"#), RejectCode::InvalidN);
    }

    #[test]
    fn on_several_partitions_a_rating_must_be_keyed_by_its_uid() {
        let payload = Some(&br#"{"uid": 196, "iid": 242, "rating": 3}"#[..]);
        let max = DEFAULT_MAX_REQUEST_BYTES;
        assert!(parse_keyed_rating(None, payload, max, 1).is_ok());
        assert!(parse_keyed_rating(Some(b"196"), payload, max, 4).is_ok());
        for key in [None, Some(&b"19"[..]), Some(&b"other"[..])] {
            let refused = parse_keyed_rating(key, payload, max, 4).unwrap_err();
            assert_eq!(refused.code, RejectCode::NotKeyedByUser);
            assert!(refused.message.contains("\"196\""), "{}", refused.message);
        }
    }

    #[test]
    fn rating_events_parse_and_bad_ones_say_why() {
        let r = parse_rating(
            Some(br#"{"uid": 196, "iid": "242", "rating": 3.0, "ts": 881250949}"#),
            1000,
        )
        .unwrap();
        assert_eq!(
            (r.uid.as_str(), r.iid.as_str(), r.rating, r.ts),
            ("196", "242", 3.0, Some(881250949))
        );
        assert_eq!(
            parse_rating(Some(br#"{"uid": 1, "iid": 2, "rating": 4}"#), 1000)
                .unwrap()
                .ts,
            None
        );
        let code = |text: &str| parse_rating(Some(text.as_bytes()), 1000).unwrap_err().code;
        assert_eq!(code(r#"{"iid": 2, "rating": 4}"#), RejectCode::MissingUid);
        assert_eq!(code(r#"{"uid": 1, "rating": 4}"#), RejectCode::MissingIid);
        assert_eq!(
            code(r#"{"uid": 1, "iid": [2], "rating": 4}"#),
            RejectCode::InvalidIid
        );
        assert_eq!(code(r#"{"uid": 1, "iid": 2}"#), RejectCode::InvalidRating);
        assert_eq!(
            code(r#"{"uid": 1, "iid": 2, "rating": "five"}"#),
            RejectCode::InvalidRating
        );
        assert_eq!(
            code(r#"{"uid": 1, "iid": 2, "rating": 4, "ts": "yesterday"}"#),
            RejectCode::InvalidTs
        );
        assert_eq!(code("nope"), RejectCode::InvalidJson);
    }

    #[test]
    fn dead_letters_keep_the_original_bytes() {
        let origin = Origin {
            topic: "in",
            partition: 2,
            offset: 41,
        };
        let rejection = parse_request(Some(b"\xff\x00binary"), 100).unwrap_err();
        let letter: Value = serde_json::from_slice(&encode_dead_letter(
            &rejection,
            &origin,
            Some(b"\xff\x00binary"),
        ))
        .unwrap();
        assert_eq!(letter["reason"], "not_utf8");
        assert_eq!(letter["payload_encoding"], "base64");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(letter["payload"].as_str().unwrap())
            .unwrap();
        assert_eq!(decoded, b"\xff\x00binary");
        assert_eq!(
            (
                letter["topic"].as_str(),
                letter["partition"].as_i64(),
                letter["offset"].as_i64()
            ),
            (Some("in"), Some(2), Some(41))
        );

        let rejection = parse(r#"{"user": 1}"#).unwrap_err();
        let letter: Value = serde_json::from_slice(&encode_dead_letter(
            &rejection,
            &origin,
            Some(br#"{"user": 1}"#),
        ))
        .unwrap();
        assert_eq!(letter["payload"], r#"{"user": 1}"#);
        assert_eq!(letter["payload_encoding"], "utf8");
        assert_eq!(letter["error"], "no \"uid\" field");
    }

    fn restore(letter: &Value) -> Vec<u8> {
        let text = letter["payload"].as_str().unwrap_or_default();
        if letter["payload_encoding"] == "base64" {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap()
        } else {
            text.as_bytes().to_vec()
        }
    }

    #[test]
    fn an_oversized_message_gets_a_dead_letter_that_fits_with_a_prefix() {
        // Each of the cases that once made a dead letter too large to deliver:
        // control characters (escaped six-fold), invalid UTF-8 (base64, 4/3),
        // and plain megabytes.
        let origin = Origin {
            topic: "quickstart-events",
            partition: 3,
            offset: 41,
        };
        let rejection = Rejection {
            code: RejectCode::TooLarge,
            message: "too large".into(),
        };
        for payload in [
            vec![1u8; 200_000],
            vec![0xffu8; 800_000],
            vec![b'a'; 10 * 1024 * 1024],
            "é".repeat(600_000).into_bytes(),
        ] {
            let encoded = encode_dead_letter(&rejection, &origin, Some(&payload));
            assert!(encoded.len() <= MAX_DEAD_LETTER_BYTES, "{}", encoded.len());
            assert!(
                encoded.len() > MAX_DEAD_LETTER_BYTES - 16,
                "as much of the payload as fits: {}",
                encoded.len()
            );
            let letter: Value = serde_json::from_slice(&encoded).unwrap();
            assert_eq!(letter["truncated"], true);
            assert_eq!(letter["payload_bytes"], payload.len());
            assert_eq!(
                (letter["partition"].clone(), letter["offset"].clone()),
                (3.into(), 41.into())
            );
            assert_eq!(letter["reason"], "too_large");
            let prefix = restore(&letter);
            assert!(!prefix.is_empty() && payload.starts_with(&prefix));
        }
        let big = encode_dead_letter(&rejection, &origin, Some(&[1u8; 200_000]));
        let shrunk = shrink_dead_letter(&big, MIN_DEAD_LETTER_BYTES).unwrap();
        assert!(shrunk.len() <= MIN_DEAD_LETTER_BYTES);
        let letter: Value = serde_json::from_slice(&shrunk).unwrap();
        assert_eq!(
            (letter["truncated"].clone(), letter["payload_bytes"].clone()),
            (true.into(), 200_000.into())
        );
        assert_eq!(letter["reason"], "too_large");
        assert!(
            shrink_dead_letter(&shrunk, MIN_DEAD_LETTER_BYTES).is_none(),
            "cannot get smaller"
        );
        let small = encode_dead_letter(&rejection, &origin, Some(b"{}"));
        let letter: Value = serde_json::from_slice(&small).unwrap();
        assert!(letter.get("truncated").is_none() && letter.get("payload_bytes").is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(recstream_core::testing::fuzz_cases()))]

        #[test]
        fn a_dead_letter_never_exceeds_its_limit_and_keeps_a_prefix(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            text in "\\PC{0,200}",
            use_text in any::<bool>(),
            limit in 200usize..1200,
        ) {
            let payload = if use_text { text.into_bytes() } else { bytes };
            let origin = Origin { topic: "t", partition: 1, offset: 7 };
            let rejection = Rejection { code: RejectCode::InvalidJson, message: "not JSON".into() };
            let encoded = encode_dead_letter_within(&rejection, &origin, Some(&payload), limit);
            prop_assert!(encoded.len() <= limit, "{} > {}", encoded.len(), limit);
            let letter: Value = serde_json::from_slice(&encoded).unwrap();
            let prefix = restore(&letter);
            prop_assert!(payload.starts_with(&prefix));
            prop_assert_eq!(letter.get("truncated").is_some(), prefix.len() < payload.len());
        }

        #[test]
        fn any_bytes_give_a_request_or_a_rejection(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_request(Some(&bytes), 100);
        }

        #[test]
        fn any_bytes_give_a_rating_or_a_rejection(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_rating(Some(&bytes), 100);
        }

        /// The allocation-free reading and the full parse agree on every
        /// request: the same fields, or the same rejection.
        #[test]
        fn reading_borrowed_agrees_with_the_full_parse(
            picks in proptest::collection::vec((0usize..4, 0usize..VALUES.len()), 0..5),
        ) {
            let text = object(&picks);
            let full = parse_request_fully(Some(text.as_bytes()), DEFAULT_MAX_REQUEST_BYTES);
            prop_assert_eq!(parse(&text), full.clone());
            if let Some(plain) = plain_request(&text) {
                prop_assert_eq!(Ok(plain), full);
            }
        }

        /// The reply written by hand is what serialising the same fields writes.
        #[test]
        fn replies_are_what_serde_writes(
            picks in proptest::collection::vec((0usize..4, 0usize..VALUES.len()), 1..5),
            version in "[a-z0-9+\"\\\\]{0,12}",
            cold_start in any::<bool>(),
            scores in proptest::collection::vec(-10.0f32..10.0, 0..4),
        ) {
            let text = object(&picks);
            let Ok(request) = parse(&text) else { return Ok(()) };
            let recommendations: Vec<recstream_core::Recommendation> = scores
                .iter()
                .enumerate()
                .map(|(i, &score)| recstream_core::Recommendation {
                    iid: RawId::new(["7", "007", "x\"y"][i % 3]),
                    title: "T".repeat(i),
                    score,
                })
                .collect();
            #[derive(Serialize)]
            struct Reply<'a> {
                uid: RawId,
                request_id: Option<Value>,
                recommendations: &'a [recstream_core::Recommendation],
                model_version: &'a str,
                cold_start: bool,
            }
            let expected = serde_json::to_vec(&Reply {
                uid: RawId::new(&*request.uid),
                request_id: request.request_id.as_deref().map(|id| serde_json::from_str(id).unwrap()),
                recommendations: &recommendations,
                model_version: &version,
                cold_start,
            }).unwrap();
            let mut written = Vec::new();
            let array = serde_json::to_vec(&recommendations).unwrap();
            write_reply(&mut written, &request, &array, &version, cold_start);
            prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(expected).unwrap());
        }

        #[test]
        fn integer_uids_round_trip_as_text(uid in any::<i64>(), n in 1usize..=100) {
            let text = format!(r#"{{"uid": {uid}, "n": {n}}}"#);
            let r = parse(&text).unwrap();
            prop_assert_eq!(&*r.uid, uid.to_string());
            prop_assert_eq!(r.n, Some(n));
        }

        #[test]
        fn dead_letters_always_restore_the_payload(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let origin = Origin { topic: "t", partition: 0, offset: 0 };
            let rejection = Rejection { code: RejectCode::InvalidJson, message: "x".into() };
            let letter: Value = serde_json::from_slice(&encode_dead_letter(&rejection, &origin, Some(&bytes))).unwrap();
            let text = letter["payload"].as_str().unwrap();
            let restored = if letter["payload_encoding"] == "base64" {
                base64::engine::general_purpose::STANDARD.decode(text).unwrap()
            } else {
                text.as_bytes().to_vec()
            };
            prop_assert_eq!(restored, bytes);
        }
    }
}
