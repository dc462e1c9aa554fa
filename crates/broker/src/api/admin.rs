//! ApiVersions, Metadata, CreateTopics, DescribeConfigs, InitProducerId and
//! FindCoordinator: what clients ask before and around the data path.
//!
//! The broker is one node (id 0) that leads every partition and
//! coordinates every group, so metadata and coordinator answers always
//! point at its own advertised address.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};
use kafka_protocol::messages::create_topics_request::CreateTopicsRequest;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicResult, CreateTopicsResponse,
};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsRequest;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResponse, DescribeConfigsResult,
};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, ProducerId, TopicName};

use super::{SUPPORTED, str_bytes};
use crate::server::{Shared, lock};
use crate::topics;

/// This broker's node id.
const NODE: i32 = 0;
/// DescribeConfigs resource types.
const TOPIC_RESOURCE: i8 = 2;
const BROKER_RESOURCE: i8 = 4;
/// Config sources: set on the topic, or the broker's default.
const TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

/// Our version ranges; `unsupported` for the KIP-511 fallback answer.
pub(super) fn api_versions(unsupported: bool) -> ApiVersionsResponse {
    let keys = SUPPORTED
        .iter()
        .map(|(k, min, max)| {
            ApiVersion::default()
                .with_api_key(*k as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect();
    let mut resp = ApiVersionsResponse::default().with_api_keys(keys);
    if unsupported {
        resp.error_code = ResponseError::UnsupportedVersion.code();
    }
    resp
}

fn broker(shared: &Shared) -> MetadataResponseBroker {
    MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE))
        .with_host(str_bytes(&shared.config.advertised_host))
        .with_port(i32::from(shared.port))
}

/// Metadata: the asked topics (all when null), auto-creating if allowed.
pub(super) fn metadata(shared: &Shared, req: MetadataRequest, version: i16) -> MetadataResponse {
    let mut topics = lock(&shared.topics);
    let names: Vec<String> = match &req.topics {
        None => topics.iter().map(|(n, _)| n.clone()).collect(),
        Some(list) => list
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.as_str().to_string()))
            .collect(),
    };
    // Before v4 a topic's absence always created it (if the broker allows).
    let may_create =
        shared.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        if topics.get(&name).is_none() && may_create && topics::valid_name(&name) {
            let created = topics.create(
                &name,
                shared.config.default_partitions,
                BTreeMap::new(),
                shared.config.retention_bytes,
                false,
            );
            if created.is_ok() {
                tracing::debug!(topic = %name, "auto-created");
            }
        }
        let mut t = MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(&name))));
        match topics.get(&name) {
            None => {
                t.error_code = if topics::valid_name(&name) {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    ResponseError::InvalidTopicException.code()
                };
            }
            Some(topic) => {
                t.partitions = (0..topic.partitions.len())
                    .map(|i| {
                        let mut p = MetadataResponsePartition::default()
                            .with_partition_index(i as i32)
                            .with_leader_id(BrokerId(NODE))
                            .with_replica_nodes(vec![BrokerId(NODE)])
                            .with_isr_nodes(vec![BrokerId(NODE)]);
                        if version >= 7 {
                            p.leader_epoch = 0;
                        }
                        p
                    })
                    .collect();
            }
        }
        out.push(t);
    }
    let mut resp = MetadataResponse::default()
        .with_brokers(vec![broker(shared)])
        .with_controller_id(BrokerId(NODE))
        .with_topics(out);
    if version >= 2 {
        resp.cluster_id = Some(str_bytes("recstream-broker"));
    }
    resp
}

/// CreateTopics, honouring `validate_only`.
pub(super) fn create_topics(
    shared: &Shared,
    req: CreateTopicsRequest,
    version: i16,
) -> CreateTopicsResponse {
    let mut topics = lock(&shared.topics);
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = if t.num_partitions == -1 {
                shared.config.default_partitions
            } else {
                t.num_partitions
            };
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| {
                    Some((
                        c.name.as_str().to_string(),
                        c.value.as_ref()?.as_str().to_string(),
                    ))
                })
                .collect();
            let outcome = if !matches!(t.replication_factor, -1 | 1) {
                Err(ResponseError::InvalidReplicationFactor)
            } else if !t.assignments.is_empty() {
                Err(ResponseError::InvalidReplicaAssignment)
            } else {
                topics.create(
                    t.name.0.as_str(),
                    partitions,
                    configs,
                    shared.config.retention_bytes,
                    req.validate_only,
                )
            };
            let mut r = CreatableTopicResult::default().with_name(t.name);
            match outcome {
                Ok(()) => {
                    if version >= 5 {
                        r.num_partitions = partitions;
                        r.replication_factor = 1;
                    }
                }
                Err(e) => {
                    r.error_code = e.code();
                    if version >= 1 {
                        r.error_message = Some(str_bytes(&e.to_string()));
                    }
                }
            }
            r
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}

/// DescribeConfigs for topics (their creation configs plus the defaults
/// this broker acts on) and brokers (nothing to report).
pub(super) fn describe_configs(
    shared: &Shared,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let topics = lock(&shared.topics);
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let mut out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            match r.resource_type {
                TOPIC_RESOURCE => match topics.get(r.resource_name.as_str()) {
                    None => out.error_code = ResponseError::UnknownTopicOrPartition.code(),
                    Some(topic) => {
                        let mut entries: BTreeMap<String, (String, i8)> = BTreeMap::new();
                        entries.insert("cleanup.policy".into(), ("delete".into(), DEFAULT_CONFIG));
                        entries.insert(
                            "retention.bytes".into(),
                            (shared.config.retention_bytes.to_string(), DEFAULT_CONFIG),
                        );
                        entries.insert(
                            "max.message.bytes".into(),
                            (shared.config.max_message_bytes.to_string(), DEFAULT_CONFIG),
                        );
                        for (k, v) in &topic.configs {
                            entries.insert(k.clone(), (v.clone(), TOPIC_CONFIG));
                        }
                        out.configs = entries
                            .into_iter()
                            .filter(|(k, _)| {
                                r.configuration_keys
                                    .as_ref()
                                    .is_none_or(|keys| keys.iter().any(|x| x.as_str() == k))
                            })
                            .map(|(k, (v, source))| {
                                let mut e = DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(&k))
                                    .with_value(Some(str_bytes(&v)));
                                if version >= 1 {
                                    e.config_source = source;
                                }
                                e
                            })
                            .collect();
                    }
                },
                BROKER_RESOURCE => {}
                _ => out.error_code = ResponseError::InvalidRequest.code(),
            }
            out
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// InitProducerId for idempotent producers (transactional ids refused).
pub(super) fn init_producer_id(
    shared: &Shared,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let resp = InitProducerIdResponse::default();
    if req.transactional_id.is_some() {
        return resp
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    if req.producer_id.0 >= 0 && req.producer_id.0 < shared.next_producer_id.load(Ordering::Relaxed)
    {
        // KIP-360: a producer bumps its own epoch after a fatal error.
        let epoch = req.producer_epoch.checked_add(1).unwrap_or(0);
        return resp
            .with_producer_id(req.producer_id)
            .with_producer_epoch(epoch);
    }
    let id = shared.next_producer_id.fetch_add(1, Ordering::Relaxed);
    resp.with_producer_id(ProducerId(id)).with_producer_epoch(0)
}

/// FindCoordinator: always this broker.
pub(super) fn find_coordinator(
    shared: &Shared,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    let host = str_bytes(&shared.config.advertised_host);
    let port = i32::from(shared.port);
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(NODE))
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE))
        .with_host(host)
        .with_port(port)
}
