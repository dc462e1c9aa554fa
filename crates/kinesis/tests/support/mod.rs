//! A local Kinesis server for the tests: kinesis-local or kinesalite, from
//! npm, started on free loopback ports and stopped on drop. The CLI's
//! Kinesis tests include this file too.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use recstream_kinesis::KinesisSettings;
use recstream_kinesis::aws_sdk_kinesis::Client;

pub const LONG: Duration = Duration::from_secs(120);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Where the npm-installed servers are.
pub fn servers() -> Option<PathBuf> {
    let dir = std::env::var_os("RECSTREAM_KINESIS_SERVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/kinesis-servers")
        });
    let found = dir.join("node_modules/kinesis-local/main.js").exists();
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "kinesis-local is not installed under {} (scripts/test installs it)",
            dir.display()
        );
        eprintln!("skipping: kinesis-local not installed (bash scripts/test installs it)");
        return None;
    }
    Some(dir)
}

/// A local Kinesis server process, stopped on drop.
pub struct KinesisLocal {
    child: Child,
    pub endpoint: String,
}

impl KinesisLocal {
    /// kinesalite: no ChildShards in GetRecords, so children are found by
    /// listing the shards.
    pub fn kinesalite() -> Option<KinesisLocal> {
        let script = servers()?.join("node_modules/kinesalite/cli.js");
        let port = free_port();
        let child = Command::new("node")
            .arg(script)
            .args(["--port", &port.to_string()])
            .args(["--createStreamMs", "20", "--updateStreamMs", "20"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kinesalite with node");
        Some(KinesisLocal {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        })
    }

    /// kinesis-local (kinesis-mock), which sends ChildShards.
    pub fn start() -> Option<KinesisLocal> {
        let dir = servers()?.join("node_modules/kinesis-local");
        let plain = free_port();
        let child = Command::new("node")
            .arg("main.js")
            .current_dir(&dir)
            .env("KINESIS_MOCK_PLAIN_PORT", plain.to_string())
            .env("KINESIS_MOCK_TLS_PORT", free_port().to_string())
            .env("CREATE_STREAM_DURATION", "50ms")
            .env("SPLIT_SHARD_DURATION", "50ms")
            .env("MERGE_SHARDS_DURATION", "50ms")
            .env("LOG_LEVEL", "WARN")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kinesis-local with node");
        Some(KinesisLocal {
            child,
            endpoint: format!("http://127.0.0.1:{plain}"),
        })
    }

    pub async fn client(&self) -> Client {
        let client = KinesisSettings {
            endpoint: Some(self.endpoint.clone()),
            region: Some("us-east-1".into()),
        }
        .client()
        .await
        .unwrap();
        let deadline = Instant::now() + LONG;
        while client.list_streams().send().await.is_err() {
            assert!(Instant::now() < deadline, "kinesis-local answers");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client
    }
}

impl Drop for KinesisLocal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn create_stream(client: &Client, name: &str, shards: i32) {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .unwrap();
    wait_active(client, name).await;
}

pub async fn wait_active(client: &Client, name: &str) {
    let deadline = Instant::now() + LONG;
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .unwrap();
        let status = summary
            .stream_description_summary()
            .map(|s| s.stream_status().as_str().to_string());
        if status.as_deref() == Some("ACTIVE") {
            return;
        }
        assert!(Instant::now() < deadline, "stream {name} becomes active");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
