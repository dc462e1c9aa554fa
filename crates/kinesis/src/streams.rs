//! The streams a command uses, checked before it starts: each must exist
//! and be active (or be created, when asked), so that a missing or
//! misspelled stream is a clear error at start rather than a failure on the
//! first request.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::types::StreamStatus;

use crate::backoff::Backoff;
use crate::error::{Reaction, describe, react};

/// How long a stream being created or updated may take to become active.
const ACTIVE_WITHIN: Duration = Duration::from_secs(120);

/// Why a stream cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// It does not exist, and was not to be created.
    #[error(
        "the Kinesis stream {stream:?} ({role}) does not exist: create it (aws kinesis create-stream --stream-name {stream} --shard-count N), or pass --create-topics"
    )]
    Missing {
        /// The stream.
        stream: String,
        /// What it is for (requests, replies, ...).
        role: String,
    },
    /// It is being deleted, or did not become active in time.
    #[error("the Kinesis stream {stream:?} ({role}) is {status}, not active")]
    NotActive {
        /// The stream.
        stream: String,
        /// What it is for.
        role: String,
        /// Its status.
        status: String,
    },
    /// Kinesis could not be asked (unreachable, no permission).
    #[error("cannot check the Kinesis stream {stream:?} ({role}): {reason}")]
    Unreachable {
        /// The stream.
        stream: String,
        /// What it is for.
        role: String,
        /// Why.
        reason: String,
    },
}

/// A stream a command uses, and what for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamUse {
    /// The stream.
    pub stream: String,
    /// What it is for, as said in errors ("requests", "replies", ...).
    pub role: &'static str,
}

/// Checks that every stream in `uses` exists and is active; with `create`,
/// creates the missing ones with `shards` shards and waits for them.
pub async fn prepare(
    client: &Client,
    uses: &[StreamUse],
    create: bool,
    shards: i32,
) -> Result<(), StreamError> {
    for used in uses {
        match status(client, used).await? {
            Some(_) => {}
            None if create => {
                tracing::info!(stream = %used.stream, shards, "creating the Kinesis stream");
                let created = client
                    .create_stream()
                    .stream_name(&used.stream)
                    .shard_count(shards)
                    .send()
                    .await;
                if let Err(e) = created {
                    // Another process may have created it meanwhile.
                    if e.as_service_error()
                        .is_none_or(|s| !s.is_resource_in_use_exception())
                    {
                        return Err(unreachable(used, describe(&e)));
                    }
                }
            }
            None => {
                return Err(StreamError::Missing {
                    stream: used.stream.clone(),
                    role: used.role.to_string(),
                });
            }
        }
        wait_active(client, used).await?;
    }
    Ok(())
}

/// A stream's status, `None` when it does not exist.
async fn status(client: &Client, used: &StreamUse) -> Result<Option<StreamStatus>, StreamError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match client
            .describe_stream_summary()
            .stream_name(&used.stream)
            .send()
            .await
        {
            Ok(out) => {
                return Ok(out
                    .stream_description_summary()
                    .map(|s| s.stream_status().clone()));
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) if react(&e) == Reaction::Throttled && backoff.failures() < 10 => {
                tokio::time::sleep(backoff.next_wait()).await;
            }
            Err(e) => return Err(unreachable(used, describe(&e))),
        }
    }
}

/// Waits until the stream is active (created or resharded, it is not yet).
async fn wait_active(client: &Client, used: &StreamUse) -> Result<(), StreamError> {
    let deadline = tokio::time::Instant::now() + ACTIVE_WITHIN;
    loop {
        let status = status(client, used).await?;
        match status {
            Some(StreamStatus::Active) => return Ok(()),
            Some(StreamStatus::Creating | StreamStatus::Updating)
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => {
                return Err(StreamError::NotActive {
                    stream: used.stream.clone(),
                    role: used.role.to_string(),
                    status: other.map_or_else(|| "gone".to_string(), |s| s.as_str().to_lowercase()),
                });
            }
        }
    }
}

fn unreachable(used: &StreamUse, reason: String) -> StreamError {
    StreamError::Unreachable {
        stream: used.stream.clone(),
        role: used.role.to_string(),
        reason,
    }
}
