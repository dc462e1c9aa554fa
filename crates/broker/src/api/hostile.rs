//! Hostile input: random and mutated request frames never panic the
//! decoder or a handler; each gets an answer or a clean refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, JoinGroupRequest, MetadataRequest, OffsetCommitRequest, ProduceRequest,
    RequestHeader, SyncGroupRequest, TopicName,
};
use kafka_protocol::protocol::Encodable;
use proptest::prelude::*;

use super::{SUPPORTED, handle, str_bytes};
use crate::config::BrokerConfig;
use crate::server::{Shared, lock};

fn shared() -> Shared {
    let shared = Shared::new(BrokerConfig::default().check().unwrap(), 9092);
    lock(&shared.topics)
        .create("t", 2, Default::default(), 1 << 20, false)
        .unwrap();
    shared
}

fn frame<T: Encodable>(key: ApiKey, version: i16, body: &T) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(str_bytes("hostile")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// Well-formed requests of several APIs and versions, to be mutated.
fn seeds() -> Vec<Vec<u8>> {
    let batch = Bytes::from(crate::batch::tests::batch(3, 5, 0, 0, 1));
    let produce = ProduceRequest::default().with_acks(1).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(TopicName(str_bytes("t")))
            .with_partition_data(vec![
                PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch)),
            ]),
    ]);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_max_bytes(1 << 20)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(str_bytes("t")))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let join = JoinGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(str_bytes("g")))
        .with_session_timeout_ms(3000)
        .with_rebalance_timeout_ms(3000)
        .with_protocol_type(str_bytes("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name(str_bytes("range")),
        ]);
    let sync = SyncGroupRequest::default()
        .with_group_id(kafka_protocol::messages::GroupId(str_bytes("g")));
    let mut out = Vec::new();
    for v in [3, 7, 9] {
        out.push(frame(ApiKey::Produce, v, &produce));
    }
    for v in [4, 11, 12] {
        out.push(frame(ApiKey::Fetch, v, &fetch));
    }
    for v in [1, 9] {
        out.push(frame(ApiKey::Metadata, v, &MetadataRequest::default()));
    }
    for v in [0, 5, 7] {
        out.push(frame(ApiKey::JoinGroup, v, &join));
    }
    out.push(frame(ApiKey::SyncGroup, 3, &sync));
    out.push(frame(
        ApiKey::OffsetCommit,
        8,
        &OffsetCommitRequest::default(),
    ));
    out
}

/// Feeds one frame to the request path; time is paused so that long polls
/// and group waits end at once instead of after their timeouts.
fn feed(shared: &Shared, bytes: Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(120),
            handle(shared, Bytes::from(bytes), "127.0.0.1"),
        )
        .await;
    });
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    /// Overwrite 4 bytes with a big count (array and string lengths).
    BigCount(usize, i32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (
            any::<usize>(),
            prop_oneof![Just(i32::MAX), Just(-2), Just(1 << 20), any::<i32>()]
        )
            .prop_map(|(i, n)| Mutation::BigCount(i, n)),
    ]
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        let at = |i: usize| i % b.len();
        match m {
            Mutation::Flip(i, x) => {
                let i = at(*i);
                b[i] ^= x;
            }
            Mutation::Truncate(i) => {
                let i = at(*i);
                b.truncate(i);
            }
            Mutation::Insert(i, bytes) => {
                let i = at(*i);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::BigCount(i, n) => {
                let i = at(*i);
                let end = (i + 4).min(b.len());
                b[i..end].copy_from_slice(&n.to_be_bytes()[..end - i]);
            }
        }
    }
    b
}

/// Cases per property: `PROPTEST_CASES`, else 10,000 under CI, else 1,000,
/// as `recstream_core::testing::fuzz_cases` gives the other fuzz suites (the
/// broker depends on nothing of recstream's, so it counts for itself).
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("CI").is_some() {
            10_000
        } else {
            1_000
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn random_frames_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        feed(&shared(), bytes);
    }

    #[test]
    fn frames_with_a_supported_header_and_a_random_body_never_panic(
        which in 0..SUPPORTED.len(),
        version_pick in any::<u16>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let (key, min, max) = SUPPORTED[which];
        let version = min + (version_pick % (max - min + 1) as u16) as i16;
        let mut b = BytesMut::new();
        b.put_i16(key as i16);
        b.put_i16(version);
        b.put_i32(1);
        b.put_slice(&body);
        feed(&shared(), b.to_vec());
    }

    #[test]
    fn mutated_requests_never_panic(
        seed in 0..13usize,
        muts in proptest::collection::vec(mutation(), 1..4),
    ) {
        let seeds = seeds();
        let bytes = apply(seeds[seed % seeds.len()].clone(), &muts);
        feed(&shared(), bytes);
    }

    #[test]
    fn mutated_record_batches_never_panic(muts in proptest::collection::vec(mutation(), 1..4)) {
        let b = apply(crate::batch::tests::batch(4, 9, 0, 0, 1), &muts);
        let _ = crate::batch::parse(&b);
    }
}

#[test]
fn the_seeds_are_answered_when_intact() {
    // The premise of the mutation test: unmutated, every seed decodes and
    // gets a reply, so mutations start from real requests.
    let shared = shared();
    for (i, s) in seeds().into_iter().enumerate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let out = rt.block_on(handle(&shared, Bytes::from(s), "127.0.0.1"));
        assert!(
            matches!(out, Ok(super::Outcome::Reply(_))),
            "seed {i}: {out:?}"
        );
    }
}

mod schemas {
    //! The prescan's schemas against `kafka-protocol`'s own encodings.

    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Encodable;

    use super::super::{SUPPORTED, prescan, str_bytes};

    fn body<T: Encodable>(t: &T, v: i16) -> Option<Vec<u8>> {
        let mut b = BytesMut::new();
        t.encode(&mut b, v).ok()?;
        Some(b.to_vec())
    }

    fn topic() -> TopicName {
        TopicName(str_bytes("t"))
    }

    /// A request of `key` with every array it has filled, encoded at `v`
    /// (`None` where a filled field does not exist in `v`).
    fn filled(key: ApiKey, v: i16) -> Option<Vec<u8>> {
        match key {
            ApiKey::Produce => body(
                &ProduceRequest::default()
                    .with_transactional_id(Some(TransactionalId(str_bytes("x"))))
                    .with_topic_data(vec![
                        produce_request::TopicProduceData::default()
                            .with_name(topic())
                            .with_partition_data(vec![
                                produce_request::PartitionProduceData::default()
                                    .with_records(Some(Bytes::from_static(b"abc"))),
                                produce_request::PartitionProduceData::default(),
                            ]),
                    ]),
                v,
            ),
            ApiKey::Fetch => {
                let topics = vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(topic())
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default(),
                            fetch_request::FetchPartition::default().with_partition(1),
                        ]),
                ];
                let with_forgotten = FetchRequest::default()
                    .with_topics(topics.clone())
                    .with_forgotten_topics_data(vec![
                        fetch_request::ForgottenTopic::default()
                            .with_topic(topic())
                            .with_partitions(vec![1, 2]),
                    ]);
                body(&with_forgotten, v)
                    .or_else(|| body(&FetchRequest::default().with_topics(topics), v))
            }
            ApiKey::ListOffsets => body(
                &ListOffsetsRequest::default().with_topics(vec![
                    list_offsets_request::ListOffsetsTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            list_offsets_request::ListOffsetsPartition::default()
                                .with_timestamp(-1),
                        ]),
                ]),
                v,
            ),
            ApiKey::Metadata => body(
                &MetadataRequest::default().with_topics(Some(vec![
                    metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
                ])),
                v,
            ),
            ApiKey::OffsetCommit => body(
                &OffsetCommitRequest::default().with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_committed_metadata(Some(str_bytes("m"))),
                        ]),
                ]),
                v,
            ),
            ApiKey::OffsetFetch => body(
                &OffsetFetchRequest::default().with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic())
                        .with_partition_indexes(vec![0, 1]),
                ])),
                v,
            ),
            ApiKey::JoinGroup => body(
                &JoinGroupRequest::default().with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(str_bytes("range")),
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_metadata(Bytes::from_static(b"md")),
                ]),
                v,
            ),
            ApiKey::SyncGroup => body(
                &SyncGroupRequest::default().with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes("m"))
                        .with_assignment(Bytes::from_static(b"a")),
                ]),
                v,
            ),
            ApiKey::LeaveGroup => body(
                &LeaveGroupRequest::default().with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(str_bytes("m")),
                ]),
                v,
            ),
            ApiKey::DescribeGroups => body(
                &DescribeGroupsRequest::default()
                    .with_groups(vec![GroupId(str_bytes("g")), GroupId(str_bytes("h"))]),
                v,
            ),
            ApiKey::ListGroups => body(
                &ListGroupsRequest::default().with_states_filter(vec![str_bytes("Stable")]),
                v,
            ),
            ApiKey::CreateTopics => body(
                &CreateTopicsRequest::default().with_topics(vec![
                    create_topics_request::CreatableTopic::default()
                        .with_name(topic())
                        .with_assignments(vec![
                            create_topics_request::CreatableReplicaAssignment::default()
                                .with_broker_ids(vec![BrokerId(0)]),
                        ])
                        .with_configs(vec![
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(str_bytes("cleanup.policy"))
                                .with_value(Some(str_bytes("compact"))),
                        ]),
                ]),
                v,
            ),
            ApiKey::DescribeConfigs => body(
                &DescribeConfigsRequest::default().with_resources(vec![
                    describe_configs_request::DescribeConfigsResource::default()
                        .with_resource_type(2)
                        .with_resource_name(str_bytes("t"))
                        .with_configuration_keys(Some(vec![str_bytes("cleanup.policy")])),
                ]),
                v,
            ),
            _ => None,
        }
    }

    #[test]
    fn the_prescan_walks_every_supported_request_exactly() {
        let mut filled_versions = 0;
        for &(key, min, max) in SUPPORTED {
            for v in min..=max {
                if let Some(b) = filled(key, v) {
                    filled_versions += 1;
                    let walked = prescan::check(key, v, &b);
                    // Requests without arrays are not walked (0 bytes).
                    assert!(
                        walked == Ok(b.len()) || walked == Ok(0),
                        "{key:?} v{v}: {walked:?} of {} bytes",
                        b.len()
                    );
                    assert!(
                        walked == Ok(b.len()),
                        "{key:?} v{v} has arrays and must be walked to its end"
                    );
                }
            }
        }
        assert!(
            filled_versions > 60,
            "most versions were checked filled: {filled_versions}"
        );
    }

    #[test]
    fn a_huge_array_count_is_refused_before_decoding() {
        // Metadata v1: a topic array of i32::MAX entries in 4 bytes.
        let body = i32::MAX.to_be_bytes();
        assert!(prescan::check(ApiKey::Metadata, 1, &body).is_err());
        // Flexible (v9): the same as a varint.
        assert!(prescan::check(ApiKey::Metadata, 9, &[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    }
}
