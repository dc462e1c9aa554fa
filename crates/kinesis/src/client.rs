//! The Kinesis client: the official SDK, configured the way AWS tools are.
//!
//! Region and credentials come from the standard AWS chain (`aws-config`:
//! environment, profile, container or instance role); `--kinesis-endpoint`
//! points the client elsewhere (a VPC endpoint, or a local server such as
//! kinesis-local). A local endpoint with no credentials in the chain gets
//! fixed test credentials, since local servers check only their shape.

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

impl KinesisSettings {
    /// A client for these settings.
    pub async fn client(&self) -> aws_sdk_kinesis::Client {
        let https = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(
                tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(https);
        if let Some(region) = &self.region {
            loader = loader.region(Region::new(region.clone()));
        }
        let shared = loader.load().await;
        let mut config = aws_sdk_kinesis::config::Builder::from(&shared);
        if shared.region().is_none() {
            config = config.region(Region::new("us-east-1"));
        }
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint.clone());
            if shared.credentials_provider().is_none() || is_loopback(endpoint) {
                config = config.credentials_provider(Credentials::new(
                    "recstream-local",
                    "recstream-local",
                    None,
                    None,
                    "recstream local endpoint",
                ));
            }
        }
        aws_sdk_kinesis::Client::from_conf(config.build())
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
