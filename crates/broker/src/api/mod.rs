//! From a request frame to a response frame.
//!
//! One module per family of APIs (`data`: produce, fetch, offsets;
//! `admin`: versions, metadata, topics, configs, producer ids; `groups`:
//! the coordinator's APIs). This one reads the request header, refuses
//! what the broker does not implement, decodes the body with
//! `kafka-protocol`, and encodes the answer with the response header the
//! version calls for. Only the version ranges in [`SUPPORTED`] are
//! advertised and accepted: each is one this broker answers correctly
//! (notably Fetch and Metadata stop before topic ids).

mod admin;
mod data;
mod groups;
mod prescan;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::server::Shared;

/// API keys and the version ranges this broker implements.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 6),
    (ApiKey::Metadata, 1, 9),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::DescribeConfigs, 1, 4),
];

fn supports(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(k, min, max)| *k == key && (*min..=*max).contains(&version))
}

/// Why a connection is closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// Shorter than a request header's fixed part.
    #[error("request frame of {0} bytes is too short")]
    Short(usize),
    /// An API key Kafka does not have.
    #[error("unknown API key {0}")]
    UnknownKey(i16),
    /// An API or version this broker does not implement (Kafka closes the
    /// connection too).
    #[error("{key:?} v{version} is not implemented")]
    Unsupported {
        /// The API.
        key: ApiKey,
        /// The version asked.
        version: i16,
    },
    /// The bytes do not decode as the request they say they are.
    #[error("cannot decode {key:?} v{version}: {reason}")]
    Decode {
        /// The API.
        key: ApiKey,
        /// The version.
        version: i16,
        /// The decoder's message.
        reason: String,
    },
    /// The response could not be encoded (a bug: a field set that the
    /// version lacks).
    #[error("cannot encode the {key:?} v{version} response: {reason}")]
    Encode {
        /// The API.
        key: ApiKey,
        /// The version.
        version: i16,
        /// The encoder's message.
        reason: String,
    },
}

/// What to send back.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// This frame.
    Reply(Bytes),
    /// Nothing (Produce with acks=0).
    NoReply,
}

/// The fixed start of every request: key, version, correlation id.
pub(crate) fn peek_header(frame: &[u8]) -> Result<(i16, i16, i32), ApiError> {
    if frame.len() < 8 {
        return Err(ApiError::Short(frame.len()));
    }
    let key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    Ok((key, version, correlation))
}

/// Decodes one request frame (without its length prefix): header, then
/// body, checked against the supported versions. Public to the crate so
/// that the hostile-input tests drive exactly this path.
pub(crate) fn decode_header(frame: &mut Bytes) -> Result<(ApiKey, i16, RequestHeader), ApiError> {
    let (key, version, _) = peek_header(frame)?;
    let api = ApiKey::try_from(key).map_err(|_| ApiError::UnknownKey(key))?;
    if !supports(api, version) {
        return Err(ApiError::Unsupported { key: api, version });
    }
    let header =
        RequestHeader::decode(frame, api.request_header_version(version)).map_err(|e| {
            ApiError::Decode {
                key: api,
                version,
                reason: e.to_string(),
            }
        })?;
    Ok((api, version, header))
}

fn decode<T: Decodable>(frame: &mut Bytes, key: ApiKey, version: i16) -> Result<T, ApiError> {
    prescan::check(key, version, frame).map_err(|e| ApiError::Decode {
        key,
        version,
        reason: e.to_string(),
    })?;
    T::decode(frame, version).map_err(|e| ApiError::Decode {
        key,
        version,
        reason: e.to_string(),
    })
}

/// A response frame: length, header, body.
fn encode<T: Encodable>(
    correlation_id: i32,
    key: ApiKey,
    version: i16,
    body: &T,
) -> Result<Outcome, ApiError> {
    let fail = |e: anyhow::Error| ApiError::Encode {
        key,
        version,
        reason: e.to_string(),
    };
    let header_version = key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let size = header.compute_size(header_version).map_err(fail)?
        + body.compute_size(version).map_err(fail)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    let len = i32::try_from(size).map_err(|_| ApiError::Encode {
        key,
        version,
        reason: format!("{size} bytes do not fit a frame"),
    })?;
    buf.put_i32(len);
    header.encode(&mut buf, header_version).map_err(fail)?;
    body.encode(&mut buf, version).map_err(fail)?;
    Ok(Outcome::Reply(buf.freeze()))
}

/// Answers one request frame.
pub(crate) async fn handle(
    shared: &Shared,
    mut frame: Bytes,
    peer: &str,
) -> Result<Outcome, ApiError> {
    let (key, version, correlation) = peek_header(&frame)?;
    if key == ApiKey::ApiVersions as i16 && !supports(ApiKey::ApiVersions, version) {
        // KIP-511: a client asking a newer ApiVersions than we have gets a
        // v0 answer with UNSUPPORTED_VERSION and our ranges, and retries.
        return encode(
            correlation,
            ApiKey::ApiVersions,
            0,
            &admin::api_versions(true),
        );
    }
    let (api, version, header) = decode_header(&mut frame)?;
    let cid = header.correlation_id;
    let client_id = header.client_id.as_ref().map(|c| c.as_str()).unwrap_or("");
    match api {
        ApiKey::Produce => {
            match data::produce(shared, decode(&mut frame, api, version)?, version) {
                Some(resp) => encode(cid, api, version, &resp),
                None => Ok(Outcome::NoReply),
            }
        }
        ApiKey::Fetch => {
            let resp = data::fetch(shared, decode(&mut frame, api, version)?, version).await;
            encode(cid, api, version, &resp)
        }
        ApiKey::ListOffsets => {
            let resp = data::list_offsets(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::Metadata => {
            let resp = admin::metadata(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::ApiVersions => {
            let _: kafka_protocol::messages::ApiVersionsRequest = decode(&mut frame, api, version)?;
            encode(cid, api, version, &admin::api_versions(false))
        }
        ApiKey::CreateTopics => {
            let resp = admin::create_topics(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::DescribeConfigs => {
            let resp = admin::describe_configs(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::InitProducerId => {
            let resp = admin::init_producer_id(shared, decode(&mut frame, api, version)?);
            encode(cid, api, version, &resp)
        }
        ApiKey::FindCoordinator => {
            let resp = admin::find_coordinator(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::JoinGroup => {
            let req = decode(&mut frame, api, version)?;
            let resp = groups::join(shared, req, version, client_id, peer).await;
            encode(cid, api, version, &resp)
        }
        ApiKey::SyncGroup => {
            let resp = groups::sync(shared, decode(&mut frame, api, version)?, version).await;
            encode(cid, api, version, &resp)
        }
        ApiKey::Heartbeat => {
            let resp = groups::heartbeat(shared, decode(&mut frame, api, version)?);
            encode(cid, api, version, &resp)
        }
        ApiKey::LeaveGroup => {
            let resp = groups::leave(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::OffsetCommit => {
            let resp = groups::offset_commit(shared, decode(&mut frame, api, version)?);
            encode(cid, api, version, &resp)
        }
        ApiKey::OffsetFetch => {
            let resp = groups::offset_fetch(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::ListGroups => {
            let resp = groups::list(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        ApiKey::DescribeGroups => {
            let resp = groups::describe(shared, decode(&mut frame, api, version)?, version);
            encode(cid, api, version, &resp)
        }
        other => Err(ApiError::Unsupported {
            key: other,
            version,
        }),
    }
}

/// `StrBytes` from text.
pub(crate) fn str_bytes(s: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.to_string())
}

#[cfg(test)]
mod hostile;
