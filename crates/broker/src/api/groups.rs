//! The group coordinator's APIs, between wire messages and [`crate::group`].
//!
//! JoinGroup and SyncGroup may have to wait for other members; the
//! coordinator hands back a receiver, the lock is released, and only this
//! connection's task waits on it. A receiver whose sender was dropped (the
//! member was replaced or removed) still gets an answer here.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::messages::{GroupId, TopicName};

use super::str_bytes;
use crate::group::{Committed, Join, Joined, Reply, Synced};
use crate::server::{Shared, lock};

/// Session timeouts accepted (Kafka's broker defaults are 6 s to 30 min;
/// tests want shorter ones, so the floor is lower).
const SESSION_TIMEOUT_MS: std::ops::RangeInclusive<i32> = 100..=1_800_000;

fn millis(ms: i32) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

pub(super) async fn join(
    shared: &Shared,
    req: JoinGroupRequest,
    version: i16,
    client_id: &str,
    peer: &str,
) -> JoinGroupResponse {
    let member_id = req.member_id.as_str().to_string();
    let joined = if !SESSION_TIMEOUT_MS.contains(&req.session_timeout_ms) {
        Joined::error(ResponseError::InvalidSessionTimeout, &member_id)
    } else {
        let join = Join {
            group: req.group_id.0.as_str().to_string(),
            member_id: member_id.clone(),
            instance_id: req
                .group_instance_id
                .as_ref()
                .map(|s| s.as_str().to_string()),
            client_id: client_id.to_string(),
            client_host: peer.to_string(),
            session_timeout: millis(req.session_timeout_ms),
            // v0 has no rebalance timeout: Kafka uses the session timeout.
            rebalance_timeout: if version >= 1 {
                millis(req.rebalance_timeout_ms)
            } else {
                millis(req.session_timeout_ms)
            },
            protocol_type: req.protocol_type.as_str().to_string(),
            protocols: req
                .protocols
                .into_iter()
                .map(|p| (p.name.as_str().to_string(), p.metadata))
                .collect(),
            requires_known_member_id: version >= 4,
        };
        let reply = lock(&shared.groups).join(join, Instant::now());
        match reply {
            Reply::Now(j) => j,
            Reply::Later(rx) => rx
                .await
                .unwrap_or_else(|_| Joined::error(ResponseError::UnknownMemberId, &member_id)),
        }
    };
    let mut resp = JoinGroupResponse::default()
        .with_error_code(joined.error)
        .with_generation_id(joined.generation)
        .with_protocol_name(joined.protocol.map(|p| str_bytes(&p)))
        .with_leader(str_bytes(&joined.leader))
        .with_member_id(str_bytes(&joined.member_id))
        .with_members(
            joined
                .members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    let mut m = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(&id))
                        .with_metadata(metadata);
                    if version >= 5 {
                        m.group_instance_id = instance.map(|i| str_bytes(&i));
                    }
                    m
                })
                .collect(),
        );
    if version < 7 && resp.protocol_name.is_none() {
        // Before v7 the protocol name is not nullable.
        resp.protocol_name = Some(str_bytes(""));
    }
    if version >= 7 {
        resp.protocol_type = joined.protocol_type.map(|p| str_bytes(&p));
    }
    resp
}

pub(super) async fn sync(
    shared: &Shared,
    req: SyncGroupRequest,
    version: i16,
) -> SyncGroupResponse {
    let assignments = req
        .assignments
        .into_iter()
        .map(|a| (a.member_id.as_str().to_string(), a.assignment))
        .collect();
    let reply = lock(&shared.groups).sync(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.generation_id,
        assignments,
        Instant::now(),
    );
    let synced = match reply {
        Reply::Now(s) => s,
        Reply::Later(rx) => rx
            .await
            .unwrap_or_else(|_| Synced::error(ResponseError::RebalanceInProgress)),
    };
    let mut resp = SyncGroupResponse::default()
        .with_error_code(synced.error)
        .with_assignment(synced.assignment);
    if version >= 5 {
        resp.protocol_type = synced.protocol_type.map(|p| str_bytes(&p));
        resp.protocol_name = synced.protocol.map(|p| str_bytes(&p));
    }
    resp
}

pub(super) fn heartbeat(shared: &Shared, req: HeartbeatRequest) -> HeartbeatResponse {
    let code = lock(&shared.groups).heartbeat(
        req.group_id.0.as_str(),
        req.member_id.as_str(),
        req.generation_id,
        Instant::now(),
    );
    HeartbeatResponse::default().with_error_code(code)
}

pub(super) fn leave(shared: &Shared, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let group = req.group_id.0.as_str();
    let mut groups = lock(&shared.groups);
    let now = Instant::now();
    if version < 3 {
        let code = groups.leave(group, req.member_id.as_str(), now);
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = req
        .members
        .into_iter()
        .map(|m| {
            let code = groups.leave(group, m.member_id.as_str(), now);
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub(super) fn offset_commit(shared: &Shared, req: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = req.group_id.0.as_str();
    let mut groups = lock(&shared.groups);
    let check = groups.may_commit(
        group,
        req.member_id.as_str(),
        req.generation_id_or_member_epoch,
        Instant::now(),
    );
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let code = match check {
                        Err(e) => e.code(),
                        Ok(()) => {
                            groups.commit(
                                group,
                                t.name.0.as_str(),
                                p.partition_index,
                                Committed {
                                    offset: p.committed_offset,
                                    metadata: p
                                        .committed_metadata
                                        .as_ref()
                                        .map(|m| m.as_str().to_string()),
                                },
                            );
                            0
                        }
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

pub(super) fn offset_fetch(
    shared: &Shared,
    req: OffsetFetchRequest,
    version: i16,
) -> OffsetFetchResponse {
    let group = req.group_id.0.as_str();
    let groups = lock(&shared.groups);
    let partition = |index: i32, c: Option<Committed>| {
        let (offset, metadata) = c.map_or((-1, None), |c| (c.offset, c.metadata));
        let mut p = OffsetFetchResponsePartition::default()
            .with_partition_index(index)
            .with_committed_offset(offset)
            .with_metadata(Some(str_bytes(metadata.as_deref().unwrap_or(""))));
        if version >= 5 {
            p.committed_leader_epoch = -1;
        }
        p
    };
    let topics = match req.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| {
                let partitions = t
                    .partition_indexes
                    .iter()
                    .map(|&i| partition(i, groups.committed(group, t.name.0.as_str(), i)))
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(t.name)
                    .with_partitions(partitions)
            })
            .collect(),
        None => {
            let mut by_topic: Vec<OffsetFetchResponseTopic> = Vec::new();
            for (topic, index, c) in groups.all_committed(group) {
                let p = partition(index, Some(c));
                match by_topic.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partitions.push(p),
                    None => by_topic.push(
                        OffsetFetchResponseTopic::default()
                            .with_name(TopicName(str_bytes(&topic)))
                            .with_partitions(vec![p]),
                    ),
                }
            }
            by_topic
        }
    };
    OffsetFetchResponse::default().with_topics(topics)
}

pub(super) fn list(shared: &Shared, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let groups = lock(&shared.groups)
        .list()
        .into_iter()
        .filter(|(_, _, state)| {
            req.states_filter.is_empty()
                || req.states_filter.iter().any(|s| s.as_str() == state.name())
        })
        .map(|(id, protocol_type, state)| {
            let mut g = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(&id)))
                .with_protocol_type(str_bytes(&protocol_type));
            if version >= 4 {
                g.group_state = str_bytes(state.name());
            }
            g
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub(super) fn describe(
    shared: &Shared,
    req: DescribeGroupsRequest,
    version: i16,
) -> DescribeGroupsResponse {
    let coordinator = lock(&shared.groups);
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let mut g = DescribedGroup::default().with_group_id(id.clone());
            match coordinator.describe(id.0.as_str()) {
                None => g.group_state = str_bytes("Dead"),
                Some(view) => {
                    g.group_state = str_bytes(view.state.name());
                    g.protocol_type = str_bytes(&view.protocol_type);
                    g.protocol_data = str_bytes(&view.protocol);
                    g.members = view
                        .members
                        .into_iter()
                        .map(|m| {
                            let mut d = DescribedGroupMember::default()
                                .with_member_id(str_bytes(&m.member_id))
                                .with_client_id(str_bytes(&m.client_id))
                                .with_client_host(str_bytes(&m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if version >= 4 {
                                d.group_instance_id = m.instance_id.map(|i| str_bytes(&i));
                            }
                            d
                        })
                        .collect();
                }
            }
            g
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
