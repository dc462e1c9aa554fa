//! The Kinesis client: the official SDK, configured the way AWS tools are.
//!
//! Region and credentials come from the standard AWS chain (`aws-config`:
//! environment, profile, container or instance role); `--kinesis-endpoint`
//! points the client elsewhere (a VPC endpoint, or a local server such as
//! kinesis-local). An endpoint on this machine gets fixed test credentials
//! and, unless told otherwise, the region `us-east-1`, without asking the
//! chain (local servers check only their shape, and the chain would ask the
//! instance metadata service, which is not there). Anywhere else, no region
//! is an error: guessing one would send requests to the wrong place.

use aws_sdk_kinesis::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls;

/// Where Kinesis is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KinesisSettings {
    /// Endpoint URL (`None`: the region's AWS endpoint).
    pub endpoint: Option<String>,
    /// Region (`None`: from the AWS chain, `us-east-1` if it has none).
    pub region: Option<String>,
}

/// Why no client could be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The AWS chain has no region, and none was given.
    #[error(
        "no AWS region for Kinesis: set AWS_REGION (or a profile's region), or pass --kinesis-region"
    )]
    NoRegion,
}

/// The region local servers are asked for when none is given.
const LOCAL_REGION: &str = "us-east-1";

impl KinesisSettings {
    /// A client for these settings.
    pub async fn client(&self) -> Result<aws_sdk_kinesis::Client, ClientError> {
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let local = self.endpoint.as_deref().is_some_and(is_loopback);
        let region = self
            .region
            .clone()
            .or_else(|| local.then(|| LOCAL_REGION.to_string()));
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        let shared = loader.load().await;
        if shared.region().is_none() {
            return Err(ClientError::NoRegion);
        }
        let mut config = aws_sdk_kinesis::config::Builder::from(&shared);
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint.clone());
            if shared.credentials_provider().is_none() || local {
                config = config.credentials_provider(Credentials::new(
                    "recstream-local",
                    "recstream-local",
                    None,
                    None,
                    "recstream local endpoint",
                ));
            }
        }
        Ok(aws_sdk_kinesis::Client::from_conf(config.build()))
    }
}

/// Whether an endpoint URL is on this machine (a local server for tests).
fn is_loopback(endpoint: &str) -> bool {
    let host = endpoint
        .split("://")
        .nth(1)
        .unwrap_or(endpoint)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    host == "localhost" || host.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_endpoints_get_test_credentials() {
        assert!(is_loopback("http://127.0.0.1:4568"));
        assert!(is_loopback("http://localhost:4568/"));
        assert!(!is_loopback("https://kinesis.eu-west-1.amazonaws.com"));
        assert!(!is_loopback(
            "https://vpce-1.kinesis.us-east-1.vpce.amazonaws.com"
        ));
    }
}
