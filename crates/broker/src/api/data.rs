//! Produce, Fetch and ListOffsets: the data path.
//!
//! Produce validates each partition's batch header and appends it under
//! the topics lock, then wakes waiting fetches. Fetch builds its answer
//! from whole stored batches (several per partition, up to the request's
//! byte budgets) and, when there is less than `min_bytes`, waits on the
//! broker's "data arrived" signal until its `max_wait` ends: a long poll,
//! answered as soon as a produce lands rather than after a fixed interval.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};

use crate::batch;
use crate::server::{Parked, Shared, lock};

/// The longest a fetch may wait, whatever it asks: a client's
/// `fetch.wait.max.ms` is far below this.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Produce: `None` for acks=0 (no response is sent).
pub(super) fn produce(
    shared: &Shared,
    req: ProduceRequest,
    version: i16,
) -> Option<ProduceResponse> {
    let acks_valid = matches!(req.acks, -1..=1);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    let mut appended = false;
    {
        let mut topics = lock(&shared.topics);
        for topic in req.topic_data {
            let name = topic.name.0.as_str().to_string();
            let mut partitions = Vec::with_capacity(topic.partition_data.len());
            for p in topic.partition_data {
                let mut resp = PartitionProduceResponse::default()
                    .with_index(p.index)
                    .with_base_offset(-1);
                let result = if !acks_valid {
                    Err(ResponseError::InvalidRequiredAcks)
                } else if req.transactional_id.is_some() {
                    // Transactions are not implemented (no InitProducerId
                    // for a transactional id is ever granted).
                    Err(ResponseError::TransactionalIdAuthorizationFailed)
                } else {
                    append(shared, &mut topics, &name, p.index, p.records.as_ref())
                };
                match result {
                    Ok(base) => {
                        appended = true;
                        resp.base_offset = base;
                    }
                    Err(e) => resp.error_code = e.code(),
                }
                if version >= 5 {
                    resp.log_start_offset = topics
                        .partition(&name, p.index)
                        .map_or(-1, |log| log.log_start());
                }
                partitions.push(resp);
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic.name)
                    .with_partition_responses(partitions),
            );
        }
    }
    if appended {
        shared.data_arrived.notify_waiters();
    }
    (req.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
}

fn append(
    shared: &Shared,
    topics: &mut crate::topics::Topics,
    topic: &str,
    partition: i32,
    records: Option<&Bytes>,
) -> Result<i64, ResponseError> {
    let log = topics.partition_mut(topic, partition)?;
    let records = records.ok_or(ResponseError::CorruptMessage)?;
    if records.len() > shared.config.max_message_bytes {
        return Err(ResponseError::MessageTooLarge);
    }
    let header = batch::parse(records).map_err(|e| {
        tracing::debug!(topic, partition, "refusing a produced batch: {e}");
        ResponseError::CorruptMessage
    })?;
    if header.control || header.transactional {
        return Err(ResponseError::InvalidRecord);
    }
    let done = log.append(&header, records)?;
    shared.stats.record_produce(done.duplicate);
    Ok(done.base_offset)
}

/// Fetch: waits until `min_bytes` are there or `max_wait` passed.
pub(super) async fn fetch(shared: &Shared, req: FetchRequest, version: i16) -> FetchResponse {
    if req.session_id != 0 {
        // Fetch sessions are not kept: every fetch must be a full one. A
        // client that still sends an incremental one is told so and falls
        // back to full fetches.
        return FetchResponse::default()
            .with_error_code(ResponseError::FetchSessionIdNotFound.code());
    }
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0).max(1);
    loop {
        // Registered before looking, so a produce between the look and the
        // wait still wakes this fetch.
        let arrived = shared.data_arrived.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        if let Some(resp) = try_fetch(shared, &req, version, min_bytes, Instant::now() >= deadline)
        {
            return resp;
        }
        let parked = Parked::new(&shared.stats.parked_fetches);
        let woken = tokio::time::timeout_at(deadline.into(), arrived).await;
        drop(parked);
        if woken.is_err() {
            // Deadline: answer with whatever there is (usually nothing).
            if let Some(resp) = try_fetch(shared, &req, version, min_bytes, true) {
                return resp;
            }
        }
    }
}

/// The response if it should be sent now: enough bytes, an error to
/// report, or `final_try`.
fn try_fetch(
    shared: &Shared,
    req: &FetchRequest,
    version: i16,
    min_bytes: usize,
    final_try: bool,
) -> Option<FetchResponse> {
    let topics = lock(&shared.topics);
    if !final_try {
        // Cheap check first: nothing is copied unless the answer is due.
        let mut available = 0usize;
        let mut error = false;
        for t in &req.topics {
            for p in &t.partitions {
                match topics.partition(t.topic.0.as_str(), p.partition) {
                    Ok(log) => {
                        if p.fetch_offset < log.log_start() || p.fetch_offset > log.log_end() {
                            error = true;
                        }
                        available += log.available_from(p.fetch_offset, min_bytes);
                    }
                    Err(_) => error = true,
                }
            }
        }
        if !error && available < min_bytes {
            return None;
        }
    }
    let mut budget = usize::try_from(req.max_bytes).unwrap_or(0);
    let mut any = false;
    let mut responses = Vec::with_capacity(req.topics.len());
    for t in &req.topics {
        let name = t.topic.0.as_str();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in &t.partitions {
            let mut data = PartitionData::default().with_partition_index(p.partition);
            match topics.partition(name, p.partition) {
                Err(e) => data.error_code = e.code(),
                Ok(log) => {
                    data.high_watermark = log.log_end();
                    data.last_stable_offset = log.log_end();
                    if version >= 5 {
                        data.log_start_offset = log.log_start();
                    }
                    let max = usize::try_from(p.partition_max_bytes)
                        .unwrap_or(0)
                        .min(budget);
                    // The first batch of the response goes out whatever its
                    // size (KIP-74), so that no consumer is stuck behind it.
                    let read = if max == 0 && any {
                        Ok(Default::default())
                    } else {
                        log.read(p.fetch_offset, max.max(1))
                    };
                    match read {
                        Err(e) => data.error_code = e.code(),
                        Ok(read) if read.batches.is_empty() => {}
                        Ok(read) if any && read.bytes > max => {}
                        Ok(read) => {
                            any = true;
                            budget = budget.saturating_sub(read.bytes);
                            shared.stats.record_fetch(read.batches.len());
                            data.records = Some(concat(&read.batches, read.bytes));
                        }
                    }
                }
            }
            partitions.push(data);
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(partitions),
        );
    }
    Some(FetchResponse::default().with_responses(responses))
}

fn concat(batches: &[Bytes], len: usize) -> Bytes {
    if let [one] = batches {
        return one.clone();
    }
    let mut out = BytesMut::with_capacity(len);
    for b in batches {
        out.extend_from_slice(b);
    }
    out.freeze()
}

/// ListOffsets: earliest (-2), latest (-1) or by timestamp.
pub(super) fn list_offsets(
    shared: &Shared,
    req: ListOffsetsRequest,
    version: i16,
) -> ListOffsetsResponse {
    let topics = lock(&shared.topics);
    let responses = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let mut r = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_timestamp(-1)
                        .with_offset(-1);
                    if version >= 4 {
                        r.leader_epoch = 0;
                    }
                    match topics.partition(t.name.0.as_str(), p.partition_index) {
                        Err(e) => r.error_code = e.code(),
                        Ok(log) => match p.timestamp {
                            -2 => r.offset = log.log_start(),
                            -1 => r.offset = log.log_end(),
                            ts if ts >= 0 => {
                                if let Some(offset) = log.offset_for_timestamp(ts) {
                                    r.offset = offset;
                                    r.timestamp = ts;
                                }
                            }
                            _ => r.error_code = ResponseError::UnsupportedVersion.code(),
                        },
                    }
                    r
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(responses)
}
