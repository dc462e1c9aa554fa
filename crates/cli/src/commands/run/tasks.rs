//! The tasks of `recstream run` under one cancellation: when one fails, all stop.
//!
//! A worker whose learner died would serve a model that no longer learns;
//! a learner whose worker died would learn for nobody. So the first task to
//! fail (or panic) cancels the shared token, every other task drains and
//! commits as it would on Ctrl-C, and the first failure is what `run`
//! reports once all of them have ended.

use std::future::Future;

use anyhow::anyhow;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Named tasks sharing one shutdown token.
pub(super) struct Tasks {
    shutdown: CancellationToken,
    running: JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Tasks {
    pub(super) fn new(shutdown: CancellationToken) -> Self {
        Tasks {
            shutdown,
            running: JoinSet::new(),
        }
    }

    /// The token every task stops on.
    pub(super) fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Starts `task` under `name`.
    pub(super) fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.running.spawn(async move { (name, task.await) });
    }

    /// Waits for every task. The first failure stops the others and is returned.
    pub(super) async fn wait(mut self) -> anyhow::Result<()> {
        let mut first_failure = None;
        while let Some(joined) = self.running.join_next().await {
            let (name, outcome) = match joined {
                Ok((name, outcome)) => (name, outcome),
                Err(e) => ("a task", Err(anyhow!("it stopped abnormally: {e}"))),
            };
            if let Err(error) = outcome {
                let error = error.context(format!("the {name} failed"));
                if !self.shutdown.is_cancelled() {
                    tracing::error!("{error:#}; stopping everything else");
                    self.shutdown.cancel();
                }
                first_failure.get_or_insert(error);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_failure_stops_the_others_and_is_reported() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        let stop = tasks.shutdown();
        tasks.spawn("worker", async move {
            stop.cancelled().await;
            Ok(())
        });
        tasks.spawn("learner", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err(anyhow!("broker gone"))
        });
        let outcome = tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .expect("the worker was stopped, so waiting ends");
        let message = format!("{:#}", outcome.expect_err("the failure is reported"));
        assert!(message.contains("the learner failed") && message.contains("broker gone"));
        assert!(shutdown.is_cancelled());
    }

    #[tokio::test]
    async fn tasks_that_end_well_leave_the_others_running_until_shutdown() {
        let shutdown = CancellationToken::new();
        let mut tasks = Tasks::new(shutdown.clone());
        tasks.spawn("demo", async { Ok(()) });
        let stop = tasks.shutdown();
        tasks.spawn("worker", async move {
            stop.cancelled().await;
            Ok(())
        });
        let waiting = tokio::spawn(tasks.wait());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!shutdown.is_cancelled() && !waiting.is_finished());
        shutdown.cancel();
        assert!(waiting.await.expect("joined").is_ok());
    }
}
