//! The wire contract: what a request, a reply and a dead letter look like on Kafka.
//!
//! Every input message becomes either a [`Request`] or a [`Rejection`] — never
//! a panic and never a silent drop. Requests are `{"uid": 196}` with `uid` a
//! JSON number or string, optional `n` (1 to 100) and optional `request_id`
//! (any JSON value, echoed back). Replies extend the core's
//! [`Recommendations`] with that `request_id`. Rejections go to the
//! dead-letter topic as a [`DeadLetter`] that carries the reason and the
//! original bytes losslessly (as text when they are UTF-8, base64 otherwise),
//! so nothing is lost and a fixed producer can replay them.

use base64::Engine;
use recstream_core::recommend::MAX_N;
use recstream_core::{RawId, Recommendations};
use serde::Serialize;
use serde_json::Value;

/// Largest request accepted, in bytes; anything larger is dead-lettered.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 64 * 1024;

/// A valid recommendation request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The user id, as text (numbers are printed canonically).
    pub uid: RawId,
    /// How many recommendations, if the request says.
    pub n: Option<usize>,
    /// Echoed back in the reply.
    pub request_id: Option<Value>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
        }
    }

    /// Every code, for pre-registering metrics.
    pub const ALL: [RejectCode; 12] = [
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
pub fn parse_request(payload: Option<&[u8]>, max_bytes: usize) -> Result<Request, Rejection> {
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
    let request_id = fields.remove("request_id");
    Ok(Request { uid, n, request_id })
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

/// The reply written to the output topic.
#[derive(Debug, Serialize)]
pub struct Reply<'a> {
    /// The user, as in the request.
    pub uid: &'a RawId,
    /// Echo of the request's `request_id` (null when absent).
    pub request_id: &'a Option<Value>,
    /// Best first.
    pub recommendations: &'a [recstream_core::Recommendation],
    /// Identifies the model that answered.
    pub model_version: &'a str,
    /// True when the user is unknown and got the popular list.
    pub cold_start: bool,
}

/// Serialises the reply to a request.
pub fn encode_reply(request: &Request, answer: &Recommendations) -> Vec<u8> {
    let reply = Reply {
        uid: &request.uid,
        request_id: &request.request_id,
        recommendations: &answer.recommendations,
        model_version: &answer.model_version,
        cold_start: answer.cold_start,
    };
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_vec(&reply).unwrap_or_default()
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
}

/// Serialises the dead letter for a rejected message.
pub fn encode_dead_letter(
    rejection: &Rejection,
    origin: &Origin<'_>,
    payload: Option<&[u8]>,
) -> Vec<u8> {
    let (payload, payload_encoding) = match payload.map(std::str::from_utf8) {
        None => (None, "utf8"),
        Some(Ok(text)) => (Some(text.to_string()), "utf8"),
        Some(Err(_)) => (
            payload.map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            "base64",
        ),
    };
    let letter = DeadLetter {
        error: &rejection.message,
        reason: rejection.code,
        topic: origin.topic,
        partition: origin.partition,
        offset: origin.offset,
        payload,
        payload_encoding,
    };
    serde_json::to_vec(&letter).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<Request, Rejection> {
        parse_request(Some(text.as_bytes()), DEFAULT_MAX_REQUEST_BYTES)
    }

    fn code(text: &str) -> RejectCode {
        parse(text).unwrap_err().code
    }

    #[test]
    fn accepts_numbers_strings_n_and_request_ids() {
        assert_eq!(parse(r#"{"uid":196}"#).unwrap().uid.as_str(), "196");
        assert_eq!(parse(r#"{"uid":"196"}"#).unwrap().uid.as_str(), "196");
        assert_eq!(parse(r#"{"uid":"u-7"}"#).unwrap().uid.as_str(), "u-7");
        let r = parse(r#"{"uid": 5, "n": 3, "request_id": "abc", "extra": true}"#).unwrap();
        assert_eq!((r.n, r.request_id), (Some(3), Some(Value::from("abc"))));
        let r = parse(r#"{"uid": 5, "request_id": {"trace": [1, 2]}}"#).unwrap();
        assert_eq!(r.request_id.unwrap()["trace"][1], 2);
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

    proptest! {
        #[test]
        fn any_bytes_give_a_request_or_a_rejection(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_request(Some(&bytes), 100);
        }

        #[test]
        fn any_bytes_give_a_rating_or_a_rejection(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_rating(Some(&bytes), 100);
        }

        #[test]
        fn integer_uids_round_trip_as_text(uid in any::<i64>(), n in 1usize..=100) {
            let r = parse(&format!(r#"{{"uid": {uid}, "n": {n}}}"#)).unwrap();
            prop_assert_eq!(r.uid.as_str(), uid.to_string());
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
