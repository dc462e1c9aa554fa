//! Listing a stream's shards, page by page.

use aws_sdk_kinesis::Client;

use crate::error::describe;
use crate::lineage::Shard;

/// Every shard of `stream` Kinesis still lists, open and closed.
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<Shard>, String> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        // A page token names the stream already; the API refuses both.
        let request = match &next {
            Some(token) => client.list_shards().next_token(token),
            None => client.list_shards().stream_name(stream),
        };
        let output = request.send().await.map_err(|e| describe(&e))?;
        shards.extend(output.shards().iter().map(|shard| {
            Shard {
                id: shard.shard_id().to_string(),
                parent: shard.parent_shard_id().map(str::to_string),
                adjacent_parent: shard.adjacent_parent_shard_id().map(str::to_string),
                closed: shard
                    .sequence_number_range()
                    .and_then(|range| range.ending_sequence_number())
                    .is_some(),
            }
        }));
        match output.next_token() {
            Some(token) => next = Some(token.to_string()),
            None => return Ok(shards),
        }
    }
}
