//! Settings that can never work, refused before anything starts.
//!
//! The worker and the learner run only on a [`Checked`] configuration,
//! which only their `check` makes ([`crate::worker::WorkerConfig::check`],
//! [`crate::learner::LearnerConfig::check`]); a setting that can never work
//! is a [`ConfigError`] naming it as the command line spells it, found
//! before anything connects, rather than a stall, a loop on the service's
//! own output, or a panic deep in the library later. This is ripgrep's split
//! of raw arguments from checked ones, and linfa's `ParamGuard`.

/// A setting that can never work, found before anything starts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {problem}")]
pub struct ConfigError {
    /// The setting, as the command line spells it.
    pub setting: &'static str,
    /// What is wrong with it, and what would do.
    pub problem: String,
}

impl ConfigError {
    /// `setting` is wrong because of `problem`.
    pub fn new(setting: &'static str, problem: impl Into<String>) -> Self {
        ConfigError {
            setting,
            problem: problem.into(),
        }
    }
}

/// A configuration that passed its check. Only `check` makes one, so code
/// that takes a `Checked<T>` never sees a value the check refuses.
#[derive(Debug, Clone)]
pub struct Checked<T>(T);

impl<T> Checked<T> {
    /// Wraps a configuration its own `check` has just passed.
    pub(crate) fn new(config: T) -> Self {
        Checked(config)
    }

    /// The configuration, no longer vouched for.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Checked<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// The first of `names` (setting, value) that is empty or blank, as an error.
pub(crate) fn require_names(names: &[(&'static str, &str)]) -> Result<(), ConfigError> {
    match names.iter().find(|(_, value)| value.trim().is_empty()) {
        Some((setting, _)) => Err(ConfigError::new(setting, "must not be empty")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use crate::kafka::KafkaSettings;
    use crate::learner::LearnerConfig;
    use crate::worker::WorkerConfig;

    fn worker() -> WorkerConfig {
        WorkerConfig::new(KafkaSettings::new("127.0.0.1:9"))
    }

    fn learner() -> LearnerConfig {
        LearnerConfig::new(KafkaSettings::new("127.0.0.1:9"))
    }

    #[test]
    fn the_defaults_pass() {
        assert!(worker().check().is_ok());
        assert!(learner().check().is_ok());
    }

    #[test]
    fn a_worker_that_would_read_its_own_output_is_refused() {
        let mut config = worker();
        config.output_topic = config.input_topic.clone();
        let error = config.check().unwrap_err();
        assert_eq!(error.setting, "--output-topic");
        assert!(error.to_string().contains("its own output"), "{error}");

        let mut config = worker();
        config.dlq_topic = config.input_topic.clone();
        assert_eq!(config.check().unwrap_err().setting, "--dlq-topic");

        let mut config = worker();
        config.model_topic = Some(config.output_topic.clone());
        assert_eq!(config.check().unwrap_err().setting, "--model-topic");
    }

    #[test]
    fn zero_limits_and_empty_names_are_refused() {
        for change in [
            (|c: &mut WorkerConfig| c.max_in_flight = 0) as fn(&mut WorkerConfig),
            |c| c.batch_size = 0,
            |c| c.max_request_bytes = 0,
            |c| c.group_id = " ".into(),
            |c| c.input_topic = String::new(),
            |c| {
                c.exactly_once = true;
                c.transactional_id = String::new();
            },
        ] {
            let mut config = worker();
            change(&mut config);
            assert!(config.clone().check().is_err(), "{config:?}");
        }
    }

    #[test]
    fn a_learner_that_would_read_its_own_output_is_refused() {
        let mut config = learner();
        config.model_topic = config.ratings_topic.clone();
        assert_eq!(config.check().unwrap_err().setting, "--ratings-topic");
        let mut config = learner();
        config.dlq_topic = config.model_topic.clone();
        assert_eq!(config.check().unwrap_err().setting, "--ratings-dlq-topic");
        let mut config = learner();
        config.max_rating_bytes = 0;
        assert!(config.check().is_err());
        let mut config = learner();
        config.snapshot_every = std::time::Duration::ZERO;
        assert_eq!(config.check().unwrap_err().setting, "--snapshot-every");
    }
}
