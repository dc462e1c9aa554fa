//! Asking a broker which Kafka APIs it implements, before relying on them.
//!
//! Exactly-once needs the transaction APIs (InitProducerId,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, TxnOffsetCommit), and the
//! start-up topic check needs CreateTopics and DescribeConfigs. Some Kafka-compatible brokers
//! lack one (Tansu 0.6 has no EndTxn): a transactional producer then starts
//! fine and fails at its first commit. So the worker and the topic check ask
//! first, with a plain ApiVersions request (the first thing every Kafka
//! client sends), and refuse to start with a clear message instead of
//! degrading silently. The probe speaks plaintext only; on TLS or SASL
//! listeners it is skipped and the first real request says.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::kafka::KafkaSettings;

/// The transaction APIs exactly-once relies on, by key and name.
pub const TRANSACTION_APIS: [(i16, &str); 5] = [
    (22, "InitProducerId"),
    (24, "AddPartitionsToTxn"),
    (25, "AddOffsetsToTxn"),
    (26, "EndTxn"),
    (28, "TxnOffsetCommit"),
];

/// API key to (lowest, highest) supported version.
pub type ApiVersions = BTreeMap<i16, (i16, i16)>;

/// The first bootstrap broker, when the client connects over plaintext:
/// the only kind of listener this probe can ask. `None` for TLS or SASL
/// listeners (the last `security.protocol` override wins, as in librdkafka).
pub fn plaintext_broker(settings: &KafkaSettings) -> Option<String> {
    let plaintext = settings
        .overrides
        .iter()
        .rev()
        .find(|(key, _)| key == "security.protocol")
        .is_none_or(|(_, value)| value.eq_ignore_ascii_case("plaintext"));
    plaintext.then(|| {
        settings
            .brokers
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    })
}

/// Why a broker could not be asked which APIs it implements.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No TCP connection to the broker.
    #[error("cannot connect to {broker}: {source}")]
    Connect {
        /// `host:port`.
        broker: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke during the exchange.
    #[error("the connection to {broker} broke while asking for its API versions: {source}")]
    Exchange {
        /// `host:port`.
        broker: String,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{broker} did not answer an ApiVersions request in {timeout:?}")]
    Timeout {
        /// `host:port`.
        broker: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// The answer is not an ApiVersions response.
    #[error("{broker} sent an unreadable ApiVersions response: {problem}")]
    Response {
        /// `host:port`.
        broker: String,
        /// What is wrong with it.
        problem: ResponseProblem,
    },
}

/// What is wrong with an ApiVersions response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseProblem {
    /// Shorter than its own fields say.
    #[error("truncated")]
    Truncated,
    /// A length prefix outside what any broker sends.
    #[error("unexpected response size {0}")]
    Size(i32),
    /// The broker answered with a Kafka error code.
    #[error("ApiVersions failed with error code {0}")]
    ErrorCode(i16),
    /// An API count no broker has.
    #[error("implausible API count {0}")]
    Count(i32),
}

/// Asks `broker` (`host:port`) for its supported API versions.
pub async fn api_versions(broker: &str, timeout: Duration) -> Result<ApiVersions, ProbeError> {
    tokio::time::timeout(timeout, exchange(broker))
        .await
        .map_err(|_| ProbeError::Timeout {
            broker: broker.to_string(),
            timeout,
        })?
}

/// One ApiVersions v0 request and its response, on a new connection.
async fn exchange(broker: &str) -> Result<ApiVersions, ProbeError> {
    let io = |source| ProbeError::Exchange {
        broker: broker.to_string(),
        source,
    };
    let mut stream = TcpStream::connect(broker)
        .await
        .map_err(|source| ProbeError::Connect {
            broker: broker.to_string(),
            source,
        })?;
    stream.write_all(&request()).await.map_err(io)?;
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await.map_err(io)?;
    let length = i32::from_be_bytes(length);
    let problem = |problem| ProbeError::Response {
        broker: broker.to_string(),
        problem,
    };
    if !(0..=1 << 20).contains(&length) {
        return Err(problem(ResponseProblem::Size(length)));
    }
    let mut body = vec![0u8; length as usize];
    stream.read_exact(&mut body).await.map_err(io)?;
    parse_api_versions(&body).map_err(problem)
}

/// An ApiVersions v0 request, framed with its length.
fn request() -> Vec<u8> {
    let client_id = b"recstream-probe";
    let mut request = Vec::with_capacity(32);
    request.extend_from_slice(&18i16.to_be_bytes()); // ApiVersions
    request.extend_from_slice(&0i16.to_be_bytes()); // version 0
    request.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    request.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    request.extend_from_slice(client_id);
    let mut framed = (request.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    framed
}

/// Parses an ApiVersions v0 response (after the length prefix).
pub fn parse_api_versions(body: &[u8]) -> Result<ApiVersions, ResponseProblem> {
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], ResponseProblem> {
        let slice = body.get(at..at + n).ok_or(ResponseProblem::Truncated)?;
        at += n;
        Ok(slice)
    };
    let i16_at = |b: &[u8]| i16::from_be_bytes([b[0], b[1]]);
    let _correlation = take(4)?;
    let error = i16_at(take(2)?);
    if error != 0 {
        return Err(ResponseProblem::ErrorCode(error));
    }
    let count = i32::from_be_bytes(
        take(4)?
            .try_into()
            .map_err(|_| ResponseProblem::Truncated)?,
    );
    if !(0..=10_000).contains(&count) {
        return Err(ResponseProblem::Count(count));
    }
    let mut apis = ApiVersions::new();
    for _ in 0..count {
        let entry = take(6)?;
        apis.insert(
            i16_at(&entry[0..2]),
            (i16_at(&entry[2..4]), i16_at(&entry[4..6])),
        );
    }
    Ok(apis)
}

/// The transaction APIs `apis` lacks, by name.
pub fn missing_transaction_apis(apis: &ApiVersions) -> Vec<&'static str> {
    TRANSACTION_APIS
        .iter()
        .filter(|(key, _)| !apis.contains_key(key))
        .map(|(_, name)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(apis: &[(i16, i16, i16)]) -> Vec<u8> {
        let mut body = 7i32.to_be_bytes().to_vec();
        body.extend_from_slice(&0i16.to_be_bytes());
        body.extend_from_slice(&(apis.len() as i32).to_be_bytes());
        for (key, min, max) in apis {
            for v in [key, min, max] {
                body.extend_from_slice(&v.to_be_bytes());
            }
        }
        body
    }

    #[test]
    fn parses_supported_apis_and_names_the_missing_transaction_ones() {
        let apis = parse_api_versions(&response(&[
            (0, 0, 9),
            (22, 0, 4),
            (24, 0, 3),
            (25, 0, 3),
            (28, 0, 3),
        ]))
        .unwrap();
        assert_eq!(apis.get(&0), Some(&(0, 9)));
        assert_eq!(missing_transaction_apis(&apis), vec!["EndTxn"]);
        let full = parse_api_versions(&response(&[
            (22, 0, 4),
            (24, 0, 3),
            (25, 0, 3),
            (26, 0, 3),
            (28, 0, 3),
        ]))
        .unwrap();
        assert!(missing_transaction_apis(&full).is_empty());
    }

    #[test]
    fn truncated_or_failed_responses_are_errors() {
        let body = response(&[(0, 0, 9)]);
        assert_eq!(
            parse_api_versions(&body[..body.len() - 1]),
            Err(ResponseProblem::Truncated)
        );
        let mut failed = body.clone();
        failed[4..6].copy_from_slice(&35i16.to_be_bytes());
        assert_eq!(
            parse_api_versions(&failed),
            Err(ResponseProblem::ErrorCode(35))
        );
    }

    #[tokio::test]
    async fn asks_a_real_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut length = [0u8; 4];
            socket.read_exact(&mut length).await.unwrap();
            let mut request = vec![0u8; i32::from_be_bytes(length) as usize];
            socket.read_exact(&mut request).await.unwrap();
            assert_eq!(&request[0..2], &18i16.to_be_bytes());
            let body = response(&[(26, 0, 3)]);
            socket
                .write_all(&(body.len() as i32).to_be_bytes())
                .await
                .unwrap();
            socket.write_all(&body).await.unwrap();
        });
        let apis = api_versions(&addr.to_string(), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(apis.contains_key(&26));
        assert!(
            api_versions("127.0.0.1:9", Duration::from_secs(2))
                .await
                .is_err()
        );
    }
}
