//! A small blocking HTTP client for downloads: timeouts, proxies from the environment, a size cap.
//!
//! Fetching is a one-off at set-up time, so a blocking client (ureq, with
//! rustls so no system TLS library is needed, but the system's trust store) is simpler than an async one.
//! A connect timeout keeps an unreachable host from stalling the fallback;
//! the size cap keeps a wrong URL from filling the disk.

use std::io::Read;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Largest body we accept (the ML-100K zip is ~5 MB, RecBole's wheel ~2 MB).
const MAX_BODY: u64 = 64 << 20;

/// A configured HTTP agent.
pub struct Http {
    agent: ureq::Agent,
}

impl Http {
    /// An agent that gives up connecting after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(connect_timeout))
            .timeout_resolve(Some(connect_timeout))
            .timeout_global(Some(Duration::from_secs(300)))
            .proxy(ureq::Proxy::try_from_env())
            // The operating system's trust store, so networks that inspect TLS
            // with their own certificate authority work as they do for curl and pip.
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::PlatformVerifier)
                    .build(),
            )
            .build()
            .new_agent();
        Http { agent }
    }

    /// The body of a successful GET, or why there is none.
    pub fn get_bytes(&self, url: &str) -> Result<Vec<u8>, String> {
        self.get_bytes_accepting(url, "*/*")
    }

    /// As [`Http::get_bytes`], asking for a media type.
    pub fn get_bytes_accepting(&self, url: &str, accept: &str) -> Result<Vec<u8>, String> {
        self.get(url, accept, &mut |_, _| {})
    }

    /// As [`Http::get_bytes`], calling `on_bytes(received, total)` as the
    /// body arrives (`total` when the server sent a length), so a slow
    /// download can show progress.
    pub fn get_bytes_reporting(
        &self,
        url: &str,
        on_bytes: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, String> {
        self.get(url, "*/*", on_bytes)
    }

    fn get(
        &self,
        url: &str,
        accept: &str,
        on_bytes: &mut dyn FnMut(u64, Option<u64>),
    ) -> Result<Vec<u8>, String> {
        let mut response = self
            .agent
            .get(url)
            .header("Accept", accept)
            .call()
            .map_err(|e| e.to_string())?;
        let total = response.body().content_length();
        let mut reader = response.body_mut().with_config().limit(MAX_BODY).reader();
        let mut body = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = reader
                .read(&mut chunk)
                .map_err(|e| format!("reading the response: {e}"))?;
            if n == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&chunk[..n]);
            on_bytes(body.len() as u64, total);
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_a_known_string() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn an_unreachable_host_is_an_error_not_a_hang() {
        // Port 9 on loopback: nothing listens there, the connection is refused at once.
        let http = Http::new(Duration::from_secs(2));
        assert!(http.get_bytes("http://127.0.0.1:9/ml-100k.zip").is_err());
    }
}
