//! The classic consumer-group coordinator, as a state machine with no I/O.
//!
//! A group moves Empty → PreparingRebalance → CompletingRebalance → Stable
//! as Kafka's `GroupCoordinator` does. JoinGroup and SyncGroup are the two
//! requests a member must wait on; here they return a [`Reply::Later`]
//! holding a oneshot receiver that the state machine answers when the
//! rebalance moves on, so the connection task awaits it without holding the
//! lock and other connections are served meanwhile. Every path that drops
//! or replaces a waiting member answers or drops its sender, so a waiting
//! request always gets a response (an error at worst), never silence.
//!
//! Time is passed in (`now`) rather than read, so the tests drive member
//! expiry and rebalance deadlines without sleeping. A member is expired
//! after its session timeout without a heartbeat unless it is waiting in a
//! JoinGroup or SyncGroup (as in Kafka); expiry during a rebalance lets the
//! rebalance finish at once instead of waiting out the rebalance timeout,
//! which is what keeps member churn cheap.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use tokio::sync::oneshot;

/// An answer now, or a receiver the coordinator answers later.
#[derive(Debug)]
pub enum Reply<T> {
    /// Answered at once.
    Now(T),
    /// Answered when the rebalance moves on.
    Later(oneshot::Receiver<T>),
}

/// Where a group is in its rebalance protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    /// No members.
    Empty,
    /// Waiting for every known member to (re)join.
    PreparingRebalance,
    /// Waiting for the leader's assignments.
    CompletingRebalance,
    /// Members have their assignments.
    Stable,
}

impl GroupState {
    /// Kafka's name for the state (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A JoinGroup, decoded.
#[derive(Debug, Clone)]
pub struct Join {
    /// Group.
    pub group: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// Static membership id, kept and reported only.
    pub instance_id: Option<String>,
    /// The client's `client.id`.
    pub client_id: String,
    /// The client's address.
    pub client_host: String,
    /// Time without heartbeat after which the member is dropped.
    pub session_timeout: Duration,
    /// Time the coordinator waits for members to rejoin.
    pub rebalance_timeout: Duration,
    /// `consumer` for consumers.
    pub protocol_type: String,
    /// Assignors the member supports, in its order of preference, with their metadata.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member must first be given an id and come back.
    pub requires_known_member_id: bool,
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    /// Error code, 0 if none.
    pub error: i16,
    /// The new generation.
    pub generation: i32,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignor.
    pub protocol: Option<String>,
    /// Leader's member id.
    pub leader: String,
    /// This member's id.
    pub member_id: String,
    /// For the leader only: every member's id, instance id and metadata.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

impl Joined {
    /// A JoinGroup refused with `error`.
    pub fn error(error: ResponseError, member_id: &str) -> Self {
        Joined {
            error: error.code(),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

/// What a SyncGroup gets back: error code and the member's assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    /// Error code, 0 if none.
    pub error: i16,
    /// The group's protocol type.
    pub protocol_type: Option<String>,
    /// The chosen assignor.
    pub protocol: Option<String>,
    /// The member's assignment, opaque to the broker.
    pub assignment: Bytes,
}

impl Synced {
    /// A SyncGroup refused with `error`.
    pub fn error(error: ResponseError) -> Self {
        Synced {
            error: error.code(),
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The offset.
    pub offset: i64,
    /// The client's metadata string.
    pub metadata: Option<String>,
}

/// One member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// `client.id`.
    pub client_id: String,
    /// Address.
    pub client_host: String,
    /// Metadata for the chosen protocol.
    pub metadata: Bytes,
    /// Its assignment.
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupView {
    /// State.
    pub state: GroupState,
    /// Protocol type.
    pub protocol_type: String,
    /// Chosen assignor.
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberView>,
}

#[derive(Debug)]
struct Member {
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    last_heard: Instant,
    pending_join: Option<oneshot::Sender<Joined>>,
    pending_sync: Option<oneshot::Sender<Synced>>,
}

#[derive(Debug)]
struct Group {
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    // BTreeMap: members are listed in a stable order (join order is not
    // needed by assignors, but determinism helps tests).
    members: BTreeMap<String, Member>,
    /// Ids handed out with MEMBER_ID_REQUIRED, until they join or expire.
    pending_ids: HashMap<String, Instant>,
    rebalance_deadline: Option<Instant>,
    offsets: BTreeMap<(String, i32), Committed>,
}

impl Group {
    fn new() -> Self {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_ids: HashMap::new(),
            rebalance_deadline: None,
            offsets: BTreeMap::new(),
        }
    }

    fn prepare_rebalance(&mut self, now: Instant) {
        if self.state == GroupState::CompletingRebalance {
            for m in self.members.values_mut() {
                if let Some(tx) = m.pending_sync.take() {
                    let _ = tx.send(Synced::error(ResponseError::RebalanceInProgress));
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        self.state = GroupState::PreparingRebalance;
        self.rebalance_deadline = Some(now + timeout);
    }

    fn maybe_complete_join(&mut self, now: Instant) {
        if self.state == GroupState::PreparingRebalance
            && self.members.values().all(|m| m.pending_join.is_some())
        {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, the
    /// others are answered with the new generation.
    fn complete_join(&mut self, now: Instant) {
        self.members.retain(|_, m| m.pending_join.is_some());
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.choose_protocol();
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        self.state = GroupState::CompletingRebalance;
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone();
        let everyone: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                (
                    id.clone(),
                    m.instance_id.clone(),
                    metadata_for(m, protocol.as_deref()),
                )
            })
            .collect();
        for (id, m) in self.members.iter_mut() {
            m.last_heard = now;
            m.assignment = Bytes::new();
            if let Some(tx) = m.pending_join.take() {
                let _ = tx.send(Joined {
                    error: 0,
                    generation: self.generation,
                    protocol_type: self.protocol_type.clone(),
                    protocol: protocol.clone(),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader {
                        everyone.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
        }
    }

    /// Kafka's vote: each member votes for its most preferred protocol among
    /// those every member supports; the most votes wins.
    fn choose_protocol(&self) -> Option<String> {
        let mut common: Option<Vec<&str>> = None;
        for m in self.members.values() {
            let names: Vec<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            common = Some(match common {
                None => names,
                Some(c) => c.into_iter().filter(|n| names.contains(n)).collect(),
            });
        }
        let common = common?;
        let mut votes: Vec<(&str, usize)> = common.iter().map(|n| (*n, 0)).collect();
        for m in self.members.values() {
            let first = m
                .protocols
                .iter()
                .find(|(n, _)| common.contains(&n.as_str()));
            if let Some(v) = first.and_then(|f| votes.iter_mut().find(|(n, _)| *n == f.0)) {
                v.1 += 1;
            }
        }
        // Ties go to the earlier protocol in the common list.
        let mut best: Option<(&str, usize)> = None;
        for v in votes {
            if best.is_none_or(|b| v.1 > b.1) {
                best = Some(v);
            }
        }
        best.map(|(n, _)| n.to_string())
    }

    fn remove_member(&mut self, id: &str, now: Instant) {
        let Some(mut m) = self.members.remove(id) else {
            return;
        };
        if let Some(tx) = m.pending_join.take() {
            let _ = tx.send(Joined::error(ResponseError::UnknownMemberId, id));
        }
        if let Some(tx) = m.pending_sync.take() {
            let _ = tx.send(Synced::error(ResponseError::UnknownMemberId));
        }
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                if self.members.is_empty() {
                    self.become_empty();
                } else {
                    self.prepare_rebalance(now);
                }
            }
            GroupState::PreparingRebalance => {
                if self.members.is_empty() {
                    self.become_empty();
                } else {
                    self.maybe_complete_join(now);
                }
            }
            GroupState::Empty => {}
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.generation += 1;
        self.protocol = None;
        self.leader = None;
        self.rebalance_deadline = None;
    }

    fn tick(&mut self, now: Instant) {
        self.pending_ids.retain(|_, expiry| *expiry > now);
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                m.pending_join.is_none()
                    && m.pending_sync.is_none()
                    && now.duration_since(m.last_heard) > m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::debug!(member = %id, "group member expired");
            self.remove_member(&id, now);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| now >= d)
        {
            self.complete_join(now);
        }
    }
}

fn metadata_for(m: &Member, protocol: Option<&str>) -> Bytes {
    m.protocols
        .iter()
        .find(|(n, _)| Some(n.as_str()) == protocol)
        .map(|(_, md)| md.clone())
        .unwrap_or_default()
}

/// Every group this broker coordinates, with their committed offsets.
#[derive(Debug, Default)]
pub struct Coordinator {
    groups: HashMap<String, Group>,
    next_member: u64,
}

impl Coordinator {
    /// No groups yet.
    pub fn new() -> Self {
        Coordinator::default()
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        format!("{client_id}-{:016x}", self.next_member)
    }

    /// JoinGroup.
    pub fn join(&mut self, req: Join, now: Instant) -> Reply<Joined> {
        if req.group.is_empty() {
            return Reply::Now(Joined::error(ResponseError::InvalidGroupId, &req.member_id));
        }
        if req.protocols.is_empty() || req.protocol_type.is_empty() {
            return Reply::Now(Joined::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        let new_id = if req.member_id.is_empty() {
            Some(self.new_member_id(&req.client_id))
        } else {
            None
        };
        let group = self
            .groups
            .entry(req.group.clone())
            .or_insert_with(Group::new);
        if !group.members.is_empty()
            && group
                .protocol_type
                .as_ref()
                .is_some_and(|t| *t != req.protocol_type)
        {
            return Reply::Now(Joined::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        if !group.members.is_empty()
            && !group.members.contains_key(&req.member_id)
            && group.members.values().all(|m| {
                !m.protocols
                    .iter()
                    .any(|(n, _)| req.protocols.iter().any(|(r, _)| r == n))
            })
        {
            return Reply::Now(Joined::error(
                ResponseError::InconsistentGroupProtocol,
                &req.member_id,
            ));
        }
        let member_id = match new_id {
            Some(id) if req.requires_known_member_id => {
                group
                    .pending_ids
                    .insert(id.clone(), now + req.session_timeout);
                return Reply::Now(Joined::error(ResponseError::MemberIdRequired, &id));
            }
            Some(id) => id,
            None => {
                if !group.members.contains_key(&req.member_id)
                    && group.pending_ids.remove(&req.member_id).is_none()
                {
                    return Reply::Now(Joined::error(
                        ResponseError::UnknownMemberId,
                        &req.member_id,
                    ));
                }
                req.member_id.clone()
            }
        };
        let (tx, rx) = oneshot::channel();
        match group.members.get_mut(&member_id) {
            Some(m) => {
                // A rejoin while an earlier JoinGroup of the same member is
                // still waiting (the client gave up on it and retried on a
                // new connection): the old one is answered, not left silent.
                if let Some(old) = m.pending_join.replace(tx) {
                    let _ = old.send(Joined::error(
                        ResponseError::RebalanceInProgress,
                        &member_id,
                    ));
                }
                if let Some(old) = m.pending_sync.take() {
                    let _ = old.send(Synced::error(ResponseError::RebalanceInProgress));
                }
                m.protocols = req.protocols;
                m.session_timeout = req.session_timeout;
                m.rebalance_timeout = req.rebalance_timeout;
                m.last_heard = now;
            }
            None => {
                group.members.insert(
                    member_id.clone(),
                    Member {
                        instance_id: req.instance_id,
                        client_id: req.client_id,
                        client_host: req.client_host,
                        session_timeout: req.session_timeout,
                        rebalance_timeout: req.rebalance_timeout,
                        protocols: req.protocols,
                        assignment: Bytes::new(),
                        last_heard: now,
                        pending_join: Some(tx),
                        pending_sync: None,
                    },
                );
            }
        }
        group.protocol_type = Some(req.protocol_type);
        if group.state != GroupState::PreparingRebalance {
            group.prepare_rebalance(now);
        } else if let Some(m) = group.members.get(&member_id) {
            // A member joining mid-rebalance can extend the deadline.
            let deadline = now + m.rebalance_timeout;
            if group.rebalance_deadline.is_none_or(|d| d < deadline) {
                group.rebalance_deadline = Some(deadline);
            }
        }
        group.maybe_complete_join(now);
        Reply::Later(rx)
    }

    /// SyncGroup: the leader's `assignments` end the rebalance.
    pub fn sync(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
        now: Instant,
    ) -> Reply<Synced> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Reply::Now(Synced::error(ResponseError::UnknownMemberId));
        };
        if !group.members.contains_key(member_id) {
            return Reply::Now(Synced::error(ResponseError::UnknownMemberId));
        }
        if generation != group.generation {
            return Reply::Now(Synced::error(ResponseError::IllegalGeneration));
        }
        let done = |g: &Group, assignment: Bytes| Synced {
            error: 0,
            protocol_type: g.protocol_type.clone(),
            protocol: g.protocol.clone(),
            assignment,
        };
        match group.state {
            GroupState::Empty => Reply::Now(Synced::error(ResponseError::UnknownMemberId)),
            GroupState::PreparingRebalance => {
                Reply::Now(Synced::error(ResponseError::RebalanceInProgress))
            }
            GroupState::Stable => {
                let assignment = group
                    .members
                    .get_mut(member_id)
                    .map(|m| {
                        m.last_heard = now;
                        m.assignment.clone()
                    })
                    .unwrap_or_default();
                Reply::Now(done(group, assignment))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                if let Some(m) = group.members.get_mut(member_id) {
                    m.last_heard = now;
                    if let Some(old) = m.pending_sync.replace(tx) {
                        let _ = old.send(Synced::error(ResponseError::RebalanceInProgress));
                    }
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut by_member: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = by_member.remove(id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    let (protocol_type, protocol) =
                        (group.protocol_type.clone(), group.protocol.clone());
                    for m in group.members.values_mut() {
                        if let Some(tx) = m.pending_sync.take() {
                            let _ = tx.send(Synced {
                                error: 0,
                                protocol_type: protocol_type.clone(),
                                protocol: protocol.clone(),
                                assignment: m.assignment.clone(),
                            });
                        }
                    }
                }
                Reply::Later(rx)
            }
        }
    }

    /// Heartbeat: the error code to answer.
    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        let Some(m) = group.members.get_mut(member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        m.last_heard = now;
        if generation != group.generation {
            return ResponseError::IllegalGeneration.code();
        }
        match group.state {
            GroupState::PreparingRebalance => ResponseError::RebalanceInProgress.code(),
            GroupState::Empty => ResponseError::UnknownMemberId.code(),
            GroupState::CompletingRebalance | GroupState::Stable => 0,
        }
    }

    /// LeaveGroup for one member: the error code to answer.
    pub fn leave(&mut self, group_id: &str, member_id: &str, now: Instant) -> i16 {
        let Some(group) = self.groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if !group.members.contains_key(member_id) {
            return ResponseError::UnknownMemberId.code();
        }
        group.remove_member(member_id, now);
        0
    }

    /// OffsetCommit's group check: `Ok` if the commit may be stored.
    pub fn may_commit(
        &mut self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        if generation < 0 && group.state == GroupState::Empty {
            return Ok(());
        }
        if group.state == GroupState::CompletingRebalance {
            return Err(ResponseError::RebalanceInProgress);
        }
        let Some(m) = group.members.get_mut(member_id) else {
            return Err(ResponseError::UnknownMemberId);
        };
        m.last_heard = now;
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    /// Stores a committed offset (after [`may_commit`](Self::may_commit)).
    pub fn commit(&mut self, group_id: &str, topic: &str, partition: i32, committed: Committed) {
        let group = self
            .groups
            .entry(group_id.to_string())
            .or_insert_with(Group::new);
        group
            .offsets
            .insert((topic.to_string(), partition), committed);
    }

    /// A committed offset, if any.
    pub fn committed(&self, group_id: &str, topic: &str, partition: i32) -> Option<Committed> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
            .cloned()
    }

    /// Every committed offset of a group, by topic and partition.
    pub fn all_committed(&self, group_id: &str) -> Vec<(String, i32, Committed)> {
        self.groups
            .get(group_id)
            .map(|g| {
                g.offsets
                    .iter()
                    .map(|((t, p), c)| (t.clone(), *p, c.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every group with its protocol type and state.
    pub fn list(&self) -> Vec<(String, String, GroupState)> {
        self.groups
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    g.protocol_type.clone().unwrap_or_default(),
                    g.state,
                )
            })
            .collect()
    }

    /// One group, if known.
    pub fn describe(&self, group_id: &str) -> Option<GroupView> {
        let g = self.groups.get(group_id)?;
        Some(GroupView {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: g.protocol.clone().unwrap_or_default(),
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberView {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: metadata_for(m, g.protocol.as_deref()),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        })
    }

    /// State, generation and member count of a group.
    #[cfg(test)]
    pub fn state(&self, group_id: &str) -> Option<(GroupState, i32, usize)> {
        self.groups
            .get(group_id)
            .map(|g| (g.state, g.generation, g.members.len()))
    }

    /// Expires silent members and overdue rebalances.
    pub fn tick(&mut self, now: Instant) {
        for g in self.groups.values_mut() {
            g.tick(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: Duration = Duration::from_secs(3);

    fn join_req(member: &str) -> Join {
        Join {
            group: "g".into(),
            member_id: member.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "127.0.0.1".into(),
            session_timeout: SESSION,
            rebalance_timeout: Duration::from_secs(60),
            protocol_type: "consumer".into(),
            protocols: vec![
                ("range".into(), Bytes::from_static(b"r")),
                ("roundrobin".into(), Bytes::new()),
            ],
            requires_known_member_id: false,
        }
    }

    fn answered<T: std::fmt::Debug>(reply: Reply<T>) -> T {
        match reply {
            Reply::Now(t) => t,
            Reply::Later(mut rx) => rx.try_recv().expect("answered"),
        }
    }

    fn pending<T>(reply: Reply<T>) -> oneshot::Receiver<T> {
        match reply {
            Reply::Later(rx) => rx,
            Reply::Now(_) => panic!("answered at once"),
        }
    }

    #[test]
    fn a_second_member_rebalances_and_heartbeats_say_so() {
        let mut c = Coordinator::new();
        let t0 = Instant::now();
        let a = answered(c.join(join_req(""), t0));
        assert_eq!((a.error, a.generation), (0, 1));
        assert_eq!(a.leader, a.member_id, "the only member leads");
        assert_eq!(a.protocol.as_deref(), Some("range"));
        let s = answered(c.sync(
            "g",
            &a.member_id,
            1,
            vec![(a.member_id.clone(), Bytes::from_static(b"all"))],
            t0,
        ));
        assert_eq!(s.assignment, Bytes::from_static(b"all"));
        assert_eq!(c.state("g").unwrap().0, GroupState::Stable);

        let mut b = pending(c.join(join_req(""), t0));
        assert_eq!(
            c.heartbeat("g", &a.member_id, 1, t0),
            ResponseError::RebalanceInProgress.code()
        );
        let a2 = answered(c.join(join_req(&a.member_id), t0));
        let b2 = b.try_recv().unwrap();
        assert_eq!((a2.generation, b2.generation), (2, 2));
        assert_eq!(a2.members.len(), 2, "the leader sees every member");
        assert!(b2.members.is_empty());
        let mut bs = pending(c.sync("g", &b2.member_id, 2, vec![], t0));
        assert_eq!(
            c.heartbeat("g", &a.member_id, 1, t0),
            ResponseError::IllegalGeneration.code()
        );
        let assign = vec![
            (a.member_id.clone(), Bytes::from_static(b"a")),
            (b2.member_id.clone(), Bytes::from_static(b"b")),
        ];
        assert_eq!(
            answered(c.sync("g", &a.member_id, 2, assign, t0)).assignment,
            Bytes::from_static(b"a")
        );
        assert_eq!(bs.try_recv().unwrap().assignment, Bytes::from_static(b"b"));
        assert_eq!(
            c.heartbeat("g", "nobody", 2, t0),
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn a_silent_member_expires_and_the_survivor_rebalances_alone() {
        let mut c = Coordinator::new();
        let t0 = Instant::now();
        let a = answered(c.join(join_req(""), t0));
        let mut b = pending(c.join(join_req(""), t0));
        let a2 = answered(c.join(join_req(&a.member_id), t0));
        let b2 = b.try_recv().unwrap();
        answered(c.sync("g", &a2.member_id, 2, vec![], t0));
        // b never heartbeats again; a does.
        let t1 = t0 + SESSION / 2;
        assert_eq!(c.heartbeat("g", &a.member_id, 2, t1), 0);
        c.tick(t0 + SESSION + Duration::from_millis(1));
        assert_eq!(c.state("g").unwrap().2, 1, "b expired");
        assert_eq!(
            c.heartbeat("g", &b2.member_id, 2, t1),
            ResponseError::UnknownMemberId.code()
        );
        assert_eq!(
            c.heartbeat("g", &a.member_id, 2, t1),
            ResponseError::RebalanceInProgress.code()
        );
        let a3 = answered(c.join(join_req(&a.member_id), t1));
        assert_eq!((a3.error, a3.generation, a3.members.len()), (0, 3, 1));
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_its_session_timeout_not_the_rebalance_timeout() {
        let mut c = Coordinator::new();
        let t0 = Instant::now();
        let a = answered(c.join(join_req(""), t0));
        answered(c.sync("g", &a.member_id, 1, vec![], t0));
        let mut b = pending(c.join(join_req(""), t0));
        c.tick(t0 + SESSION - Duration::from_millis(1));
        assert!(b.try_recv().is_err(), "still waiting for a");
        c.tick(t0 + SESSION + Duration::from_millis(1));
        let b2 = b.try_recv().unwrap();
        assert_eq!(
            (b2.error, b2.members.len()),
            (0, 1),
            "b alone, well before the 60 s rebalance timeout"
        );
    }

    #[test]
    fn a_rejoin_while_a_join_is_pending_answers_the_old_one() {
        let mut c = Coordinator::new();
        let t0 = Instant::now();
        let a = answered(c.join(join_req(""), t0));
        answered(c.sync("g", &a.member_id, 1, vec![], t0));
        let mut b = pending(c.join(join_req(""), t0));
        answered(c.join(join_req(&a.member_id), t0));
        let b = b.try_recv().unwrap();
        // A third member makes a and b rejoin; a's JoinGroup arrives twice
        // (the client gave up on the first) while b's has not come yet.
        let _c = pending(c.join(join_req(""), t0));
        let mut first = pending(c.join(join_req(&a.member_id), t0));
        let mut second = pending(c.join(join_req(&a.member_id), t0));
        assert_eq!(
            first.try_recv().unwrap().error,
            ResponseError::RebalanceInProgress.code()
        );
        answered(c.join(join_req(&b.member_id), t0));
        assert_eq!(
            second.try_recv().unwrap().error,
            0,
            "the second is the one that counts"
        );
    }

    #[test]
    fn new_members_get_an_id_first_from_v4() {
        let mut c = Coordinator::new();
        let t0 = Instant::now();
        let mut req = join_req("");
        req.requires_known_member_id = true;
        let first = answered(c.join(req.clone(), t0));
        assert_eq!(first.error, ResponseError::MemberIdRequired.code());
        req.member_id = first.member_id.clone();
        assert_eq!(answered(c.join(req.clone(), t0)).error, 0);
        req.member_id = "made-up".into();
        assert_eq!(
            answered(c.join(req, t0)).error,
            ResponseError::UnknownMemberId.code()
        );
    }

    #[test]
    fn commits_check_membership_and_generation() {
        let mut c = Coordinator::new();
        let t0 = Instant::now();
        assert!(
            c.may_commit("g", "", -1, t0).is_ok(),
            "an empty group takes simple commits"
        );
        let a = answered(c.join(join_req(""), t0));
        assert_eq!(
            c.may_commit("g", &a.member_id, 1, t0),
            Err(ResponseError::RebalanceInProgress)
        );
        answered(c.sync("g", &a.member_id, 1, vec![], t0));
        assert_eq!(
            c.may_commit("g", &a.member_id, 0, t0),
            Err(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.may_commit("g", "x", 1, t0),
            Err(ResponseError::UnknownMemberId)
        );
        assert!(c.may_commit("g", &a.member_id, 1, t0).is_ok());
        c.commit(
            "g",
            "t",
            0,
            Committed {
                offset: 42,
                metadata: None,
            },
        );
        assert_eq!(c.committed("g", "t", 0).unwrap().offset, 42);
        assert_eq!(c.leave("g", &a.member_id, t0), 0);
        assert_eq!(c.state("g").unwrap().0, GroupState::Empty);
        assert_eq!(
            c.committed("g", "t", 0).unwrap().offset,
            42,
            "offsets outlive members"
        );
    }
}
