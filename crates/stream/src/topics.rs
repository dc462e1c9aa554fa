//! The topics a command uses: what each must look like, checked at start, created when asked.
//!
//! Every command states the topics it will read and write as [`TopicSpec`]s
//! and calls [`prepare`] before it creates a consumer or a producer. Without
//! `--create-topics` that is a check: each topic must exist, have a usable
//! partition count and the configs that matter (`cleanup.policy=compact` for
//! the model topic), or the command stops at once with an error that names
//! the topic, what was found, what is needed and how to fix it. With
//! `--create-topics` the missing ones are created first (idempotently: a
//! topic another process created a moment ago is fine), then everything is
//! checked the same way. Nothing here relies on a broker's auto-creation:
//! metadata is read by a consumer-type client with
//! `allow.auto.create.topics=false`, which never creates what it asks about.
//!
//! A broker that does not answer is waited for (with a log line every few
//! seconds, until shutdown), as the README promises for every command; a
//! broker that answers "no such topic" is an error within seconds.
//! Consumer-only tools that are documented to wait for a topic use
//! [`wait_for_partitions`] instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer;
use rdkafka::types::RDKafkaErrorCode;
use tokio_util::sync::CancellationToken;

use crate::kafka::{KafkaSettings, LoggingContext};
use crate::metrics as m;

/// How long one metadata or admin request may take before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The Kafka API key of DescribeConfigs.
const DESCRIBE_CONFIGS: i16 = 32;
/// The Kafka API key of CreateTopics.
const CREATE_TOPICS: i16 = 19;
/// How often a wait for the brokers or a topic is logged.
const WAIT_LOG_EVERY: Duration = Duration::from_secs(60);

/// A topic a command uses: name, partitions, and the configs it relies on.
#[derive(Debug, Clone, PartialEq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partition count to create it with.
    pub partitions: i32,
    /// When true, an existing topic must have exactly `partitions`
    /// partitions (the model files topic is read and written on partition
    /// 0 only, in order); otherwise any count works.
    pub exact_partitions: bool,
    /// Replication factor; -1 takes the broker's default.
    pub replication: i32,
    /// Topic-level configs it is created with and must have, such as
    /// `cleanup.policy=compact`.
    pub configs: Vec<(String, String)>,
}

impl TopicSpec {
    /// A topic with `partitions` partitions (any count is accepted when it
    /// already exists) and no special config.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            name: name.into(),
            partitions,
            exact_partitions: false,
            replication: -1,
            configs: Vec::new(),
        }
    }

    /// A single-partition topic read in order (the model files topic).
    pub fn single(name: impl Into<String>) -> Self {
        TopicSpec {
            exact_partitions: true,
            ..TopicSpec::new(name, 1)
        }
    }

    /// A compacted topic (the model topic: the latest state per key is all a
    /// newcomer needs, and deleting by age would lose it), created with
    /// `partitions` partitions. Any count is accepted here: the learners
    /// check that it matches the ratings topic's, and say how to fix it.
    pub fn compacted(name: impl Into<String>, partitions: i32) -> Self {
        TopicSpec {
            configs: vec![("cleanup.policy".into(), "compact".into())],
            ..TopicSpec::new(name, partitions)
        }
    }

    /// "1 partition, cleanup.policy=compact", as the fix in an error says it.
    pub fn shape(&self) -> String {
        let mut shape = match (self.partitions, self.exact_partitions) {
            (1, _) => "1 partition".to_string(),
            (n, true) => format!("{n} partitions"),
            (n, false) => format!("{n} partitions, or any number"),
        };
        for (key, value) in &self.configs {
            shape.push_str(&format!(", {key}={value}"));
        }
        shape
    }
}

/// One thing wrong with one topic.
#[derive(Debug, Clone, PartialEq)]
pub enum TopicProblem {
    /// The broker says the topic does not exist.
    Missing {
        /// What the topic should look like.
        spec: TopicSpec,
    },
    /// The client may not see the topic.
    Unauthorized {
        /// The topic.
        topic: String,
    },
    /// The topic has the wrong number of partitions.
    Partitions {
        /// What the topic should look like.
        spec: TopicSpec,
        /// Partitions found.
        found: usize,
    },
    /// A config the command relies on has another value.
    Config {
        /// What the topic should look like.
        spec: TopicSpec,
        /// The config.
        key: String,
        /// Its value on the broker (`None`: not set, the broker's default).
        found: Option<String>,
        /// The value needed.
        needed: String,
    },
    /// The broker returned another error for the topic.
    Other {
        /// The topic.
        topic: String,
        /// The broker's error.
        error: String,
    },
}

impl std::fmt::Display for TopicProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TopicProblem::Missing { spec } => write!(
                f,
                "topic {:?} does not exist; create it ({}) or pass --create-topics",
                spec.name,
                spec.shape()
            ),
            TopicProblem::Unauthorized { topic } => write!(
                f,
                "not authorized to describe topic {topic:?}; grant this client's principal DESCRIBE, READ and WRITE on it"
            ),
            TopicProblem::Partitions { spec, found } => write!(
                f,
                "topic {:?} has {found} partitions but needs exactly {} (it is read in order on partition 0); recreate it with {}",
                spec.name,
                spec.partitions,
                spec.shape()
            ),
            TopicProblem::Config {
                spec,
                key,
                found,
                needed,
            } => write!(
                f,
                "topic {:?} has {key}={} but needs {key}={needed}; change it (kafka-configs --alter --entity-type topics --entity-name {} --add-config {key}={needed}) or recreate it with {}",
                spec.name,
                found
                    .as_deref()
                    .unwrap_or("<not set: the broker's default>"),
                spec.name,
                spec.shape()
            ),
            TopicProblem::Other { topic, error } => write!(f, "topic {topic:?}: {error}"),
        }
    }
}

/// Why the topics are not ready for a command.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    /// One or more topics are missing or mis-shaped.
    #[error("{}", describe_problems(.brokers, .problems))]
    Problems {
        /// The brokers asked.
        brokers: String,
        /// Every problem found.
        problems: Vec<TopicProblem>,
    },
    /// A topic could not be created.
    #[error("cannot create topic {topic:?} on {brokers}: {code}")]
    Create {
        /// The topic.
        topic: String,
        /// The brokers asked.
        brokers: String,
        /// The broker's error.
        code: RDKafkaErrorCode,
    },
    /// Shutdown was requested before the brokers answered.
    #[error("stopped while waiting for the Kafka brokers at {0}")]
    Interrupted(String),
    /// A client could not be created (a bad `--kafka` property, say).
    #[error("Kafka client: {0}")]
    Kafka(#[from] KafkaError),
}

fn describe_problems(brokers: &str, problems: &[TopicProblem]) -> String {
    match problems {
        [one] => format!("{one} (brokers {brokers})"),
        many => {
            let mut text = format!("{} topic problems on {brokers}:", many.len());
            for problem in many {
                text.push_str("\n  - ");
                text.push_str(&problem.to_string());
            }
            text
        }
    }
}

/// What the broker says about one topic.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Partitions(usize),
    Missing,
    Unauthorized,
    Error(String),
}

/// Checks the topics, creating the missing ones first when `create` is set.
/// Waits for unreachable brokers until `shutdown`.
pub async fn prepare(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
    create: bool,
    shutdown: &CancellationToken,
) -> Result<(), TopicError> {
    let topics = dedup(topics);
    if create {
        create_missing(settings, &topics, shutdown).await?;
    }
    check(settings, &topics, shutdown).await
}

/// Checks that every topic exists with a usable shape; see the module docs.
pub async fn check(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
    shutdown: &CancellationToken,
) -> Result<(), TopicError> {
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let found = describe(settings, &names, shutdown).await?;
    let mut problems = Vec::new();
    for (spec, found) in topics.iter().zip(found) {
        match found {
            Found::Missing => problems.push(TopicProblem::Missing { spec: spec.clone() }),
            Found::Unauthorized => problems.push(TopicProblem::Unauthorized {
                topic: spec.name.clone(),
            }),
            Found::Error(error) => problems.push(TopicProblem::Other {
                topic: spec.name.clone(),
                error,
            }),
            Found::Partitions(n) if spec.exact_partitions && n != spec.partitions as usize => {
                problems.push(TopicProblem::Partitions {
                    spec: spec.clone(),
                    found: n,
                })
            }
            Found::Partitions(_) => {}
        }
    }
    // Configs only matter for topics that exist.
    let with_configs: Vec<&TopicSpec> = topics
        .iter()
        .filter(|t| !t.configs.is_empty())
        .filter(|t| {
            !problems
                .iter()
                .any(|p| matches!(p, TopicProblem::Missing { spec } if spec.name == t.name))
        })
        .collect();
    if !with_configs.is_empty() {
        problems.extend(check_configs(settings, &with_configs).await?);
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(TopicError::Problems {
            brokers: settings.brokers.clone(),
            problems,
        })
    }
}

/// Assigns every partition `0..partitions` of `topic` to `consumer`, each
/// at the offset `start` gives for it: the one way readers that manage
/// their own positions (the learner, the tools, the benchmarks) take a
/// whole topic. Pair it with [`wait_for_partitions`] for a topic that may
/// not exist yet, so that nothing settles for zero partitions.
pub fn assign_all<C>(
    consumer: &impl rdkafka::consumer::Consumer<C>,
    topic: &str,
    partitions: usize,
    start: impl Fn(i32) -> rdkafka::Offset,
) -> Result<(), rdkafka::error::KafkaError>
where
    C: rdkafka::consumer::ConsumerContext + 'static,
{
    let mut assignment = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions as i32 {
        assignment.add_partition_offset(topic, partition, start(partition))?;
    }
    consumer.assign(&assignment)
}

/// Waits until `topic` exists and returns its partition count, logging at
/// the start of the wait and then every minute, and counting the wait in
/// `recstream_waiting_for_topic`. `None` when `shutdown` came first.
pub async fn wait_for_partitions(
    settings: &KafkaSettings,
    topic: &str,
    shutdown: &CancellationToken,
) -> Result<Option<usize>, TopicError> {
    let mut last_log: Option<Instant> = None;
    loop {
        let found = match describe(settings, &[topic.to_string()], shutdown).await {
            Ok(found) => found.into_iter().next(),
            Err(TopicError::Interrupted(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        match found {
            Some(Found::Partitions(n)) if n > 0 => {
                if last_log.is_some() {
                    tracing::info!(topic, partitions = n, "topic is there; starting");
                }
                metrics::gauge!(m::WAITING_FOR_TOPIC, "topic" => topic.to_string()).set(0.0);
                return Ok(Some(n));
            }
            Some(Found::Unauthorized) => {
                return Err(TopicError::Problems {
                    brokers: settings.brokers.clone(),
                    problems: vec![TopicProblem::Unauthorized {
                        topic: topic.to_string(),
                    }],
                });
            }
            _ => {}
        }
        metrics::gauge!(m::WAITING_FOR_TOPIC, "topic" => topic.to_string()).set(1.0);
        if last_log.is_none_or(|at| at.elapsed() >= WAIT_LOG_EVERY) {
            last_log = Some(Instant::now());
            tracing::info!(
                topic,
                brokers = %settings.brokers,
                "waiting for topic {topic:?} to be created"
            );
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Creates the topics that do not exist yet; one created concurrently by
/// another process is not an error.
async fn create_missing(
    settings: &KafkaSettings,
    topics: &[TopicSpec],
    shutdown: &CancellationToken,
) -> Result<(), TopicError> {
    let names: Vec<String> = topics.iter().map(|t| t.name.clone()).collect();
    let found = describe(settings, &names, shutdown).await?;
    let missing: Vec<&TopicSpec> = topics
        .iter()
        .zip(&found)
        .filter(|(_, f)| **f == Found::Missing)
        .map(|(t, _)| t)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !broker_implements(settings, CREATE_TOPICS).await {
        return create_on_first_use(settings, &missing).await;
    }
    create_with_admin(settings, &missing).await?;
    // The controller may answer before every broker's metadata has the new
    // topics: wait (briefly) until the check will see them.
    let deadline = Instant::now() + Duration::from_secs(20);
    let names: Vec<String> = missing.iter().map(|t| t.name.clone()).collect();
    while Instant::now() < deadline {
        let found = describe(settings, &names, shutdown).await?;
        if found
            .iter()
            .all(|f| matches!(f, Found::Partitions(n) if *n > 0))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// librdkafka's mock cluster (some tests' broker) has no CreateTopics but
/// creates a topic a producer asks about: asked for explicitly here, with
/// the broker's default partition count.
async fn create_on_first_use(
    settings: &KafkaSettings,
    missing: &[&TopicSpec],
) -> Result<(), TopicError> {
    tracing::info!(
        "the broker does not implement CreateTopics; asking it to create the topics on first use"
    );
    let names: Vec<String> = missing.iter().map(|t| t.name.clone()).collect();
    let producer: rdkafka::producer::FutureProducer<LoggingContext> = settings
        .producer()
        .create_with_context(LoggingContext::new("admin"))?;
    let _ = crate::kafka::blocking("asking the broker to create topics", move || {
        for name in &names {
            let _ = producer
                .client()
                .fetch_metadata(Some(name), REQUEST_TIMEOUT);
        }
    })
    .await;
    Ok(())
}

/// Creates `missing` with CreateTopics, with their partitions, replication
/// and configs; one that already exists by now is fine.
async fn create_with_admin(
    settings: &KafkaSettings,
    missing: &[&TopicSpec],
) -> Result<(), TopicError> {
    let admin: AdminClient<LoggingContext> = settings
        .admin()
        .create_with_context(LoggingContext::new("admin"))?;
    let new_topics: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|t| {
            t.configs.iter().fold(
                NewTopic::new(
                    &t.name,
                    t.partitions,
                    TopicReplication::Fixed(t.replication),
                ),
                |nt, (k, v)| nt.set(k, v),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    brokers: settings.brokers.clone(),
                    code,
                });
            }
        }
    }
    Ok(())
}

/// What the broker says about each of `names`, in order. Waits (logging)
/// while no broker answers.
async fn describe(
    settings: &KafkaSettings,
    names: &[String],
    shutdown: &CancellationToken,
) -> Result<Vec<Found>, TopicError> {
    let client: Arc<BaseConsumer<LoggingContext>> = Arc::new(
        settings
            .reader("recstream-topic-check")
            .set("allow.auto.create.topics", "false")
            .create_with_context(LoggingContext::new("topic-check"))?,
    );
    let started = Instant::now();
    let mut last_log: Option<Instant> = None;
    loop {
        let attempt = {
            let client = client.clone();
            let names = names.to_vec();
            crate::kafka::blocking("describing the topics", move || {
                describe_once(&client, &names)
            })
        };
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return Err(TopicError::Interrupted(settings.brokers.clone())),
            outcome = attempt => outcome,
        };
        match outcome {
            Ok(Ok(found)) => return Ok(found),
            Ok(Err(e)) => {
                if last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
                    last_log = Some(Instant::now());
                    tracing::warn!(
                        brokers = %settings.brokers,
                        waited = ?started.elapsed(),
                        "cannot check the topics yet ({e}); waiting for the brokers"
                    );
                }
            }
            Err(join) => {
                return Err(TopicError::Problems {
                    brokers: settings.brokers.clone(),
                    problems: vec![TopicProblem::Other {
                        topic: names.join(","),
                        error: format!("the metadata request did not complete: {join}"),
                    }],
                });
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Err(TopicError::Interrupted(settings.brokers.clone())),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

fn describe_once(
    client: &BaseConsumer<LoggingContext>,
    names: &[String],
) -> Result<Vec<Found>, KafkaError> {
    let mut found = Vec::with_capacity(names.len());
    for name in names {
        let metadata = client.fetch_metadata(Some(name), REQUEST_TIMEOUT)?;
        let topic = metadata.topics().iter().find(|t| t.name() == name);
        found.push(match topic {
            None => Found::Missing,
            Some(topic) => match topic.error().map(RDKafkaErrorCode::from) {
                None if topic.partitions().is_empty() => Found::Missing,
                None => Found::Partitions(topic.partitions().len()),
                Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Found::Missing,
                Some(RDKafkaErrorCode::TopicAuthorizationFailed) => Found::Unauthorized,
                // Being created right now: its partitions will be there shortly.
                Some(RDKafkaErrorCode::LeaderNotAvailable) => Found::Missing,
                Some(code) => Found::Error(code.to_string()),
            },
        });
    }
    Ok(found)
}

/// Compares the configs of `topics` with what they need. A broker without
/// DescribeConfigs (librdkafka's mock cluster) cannot be checked: that is
/// logged, not an error.
async fn check_configs(
    settings: &KafkaSettings,
    topics: &[&TopicSpec],
) -> Result<Vec<TopicProblem>, TopicError> {
    // A broker without DescribeConfigs (the mock cluster) would make the
    // request wait out its timeout: ask it first.
    if !broker_implements(settings, DESCRIBE_CONFIGS).await {
        tracing::info!(
            "the broker does not implement DescribeConfigs; not checking {}",
            config_list(topics)
        );
        return Ok(Vec::new());
    }
    let admin: AdminClient<LoggingContext> = settings
        .admin()
        .create_with_context(LoggingContext::new("admin"))?;
    let resources: Vec<ResourceSpecifier<'_>> = topics
        .iter()
        .map(|t| ResourceSpecifier::Topic(&t.name))
        .collect();
    let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
    let described = match admin.describe_configs(&resources, &options).await {
        Ok(described) => described,
        Err(e) => {
            tracing::warn!(
                "cannot read the topics' configs ({e}); not checking {}",
                config_list(topics)
            );
            return Ok(Vec::new());
        }
    };
    let mut problems = Vec::new();
    for (spec, result) in topics.iter().zip(described) {
        let resource = match result {
            Ok(resource) => resource,
            Err(code) => {
                tracing::warn!(topic = %spec.name, "cannot read the topic's configs ({code}); not checking {}", config_list(&[spec]));
                continue;
            }
        };
        for (key, needed) in &spec.configs {
            let found = resource
                .get(key)
                .and_then(|entry| entry.value.clone())
                .filter(|v| !v.is_empty());
            if found.as_deref() != Some(needed.as_str()) {
                problems.push(TopicProblem::Config {
                    spec: (*spec).clone(),
                    key: key.clone(),
                    found,
                    needed: needed.clone(),
                });
            }
        }
    }
    Ok(problems)
}

/// False only when the first broker, asked over plaintext, says it lacks the
/// API `key` (a TLS or SASL listener cannot be asked: then it is assumed).
async fn broker_implements(settings: &KafkaSettings, key: i16) -> bool {
    let Some(broker) = crate::api_versions::plaintext_broker(settings) else {
        return true;
    };
    match crate::api_versions::api_versions(&broker, REQUEST_TIMEOUT).await {
        Ok(apis) => apis.contains_key(&key),
        Err(_) => true,
    }
}

fn config_list(topics: &[&TopicSpec]) -> String {
    topics
        .iter()
        .flat_map(|t| {
            t.configs
                .iter()
                .map(move |(k, v)| format!("{}: {k}={v}", t.name))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The specs with repeated names dropped (the first one wins).
fn dedup(topics: &[TopicSpec]) -> Vec<TopicSpec> {
    let mut unique: Vec<TopicSpec> = Vec::with_capacity(topics.len());
    for topic in topics {
        if unique.iter().all(|t| t.name != topic.name) {
            unique.push(topic.clone());
        }
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_names_itself_its_shape_and_the_flag() {
        let error = TopicError::Problems {
            brokers: "127.0.0.1:9092".into(),
            problems: vec![TopicProblem::Missing {
                spec: TopicSpec::compacted("model-updates", 1),
            }],
        };
        assert_eq!(
            error.to_string(),
            "topic \"model-updates\" does not exist; create it (1 partition, cleanup.policy=compact) or pass --create-topics (brokers 127.0.0.1:9092)"
        );
    }

    #[test]
    fn a_non_compacted_model_topic_says_what_was_found_and_needed() {
        let problem = TopicProblem::Config {
            spec: TopicSpec::compacted("model-updates", 4),
            key: "cleanup.policy".into(),
            found: Some("delete".into()),
            needed: "compact".into(),
        };
        let text = problem.to_string();
        assert!(text.contains("cleanup.policy=delete"), "{text}");
        assert!(text.contains("needs cleanup.policy=compact"), "{text}");
    }

    #[test]
    fn several_problems_are_listed_one_a_line() {
        let error = TopicError::Problems {
            brokers: "b:9092".into(),
            problems: vec![
                TopicProblem::Missing {
                    spec: TopicSpec::new("rating-events", 4),
                },
                TopicProblem::Partitions {
                    spec: TopicSpec::single("model-files"),
                    found: 3,
                },
            ],
        };
        let text = error.to_string();
        assert!(text.starts_with("2 topic problems on b:9092:"), "{text}");
        assert!(text.contains("\n  - topic \"rating-events\" does not exist; create it (4 partitions, or any number)"), "{text}");
        assert!(
            text.contains("\n  - topic \"model-files\" has 3 partitions but needs exactly 1"),
            "{text}"
        );
    }

    #[test]
    fn repeated_topics_are_checked_once() {
        let topics = [
            TopicSpec::new("a", 4),
            TopicSpec::compacted("m", 1),
            TopicSpec::new("a", 2),
        ];
        let unique = dedup(&topics);
        assert_eq!(unique.len(), 2);
        assert_eq!(unique[0].partitions, 4);
    }
}
