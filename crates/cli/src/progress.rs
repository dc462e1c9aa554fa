//! Progress on stderr for the long-running commands: one small wrapper over indicatif.
//!
//! Every bar is shown only when stderr is a terminal and `--quiet` was not
//! given, so logs, pipes and CI output stay free of control characters; a
//! hidden bar accepts the same calls and draws nothing, so commands never
//! branch on it. The few shapes the commands need (steps such as epochs or
//! folds, downloaded bytes, a spinner for work of unknown length) are
//! constructors here rather than style strings repeated in each command.
//! Lines printed while a bar is up go through [`Progress::println`], which
//! clears the bar, prints and redraws it.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use recstream_core::svd::EpochReport;

/// A progress display, hidden when not wanted.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar over `len` steps named `unit` ("epoch", "fold", "run").
    pub fn steps(len: u64, unit: &str, quiet: bool) -> Self {
        Self::build(
            shown(quiet, std::io::stderr().is_terminal()),
            Some(len),
            &format!("{{spinner}} {unit} {{pos:>3}}/{{len}} [{{bar:30}}] {{msg}} ({{elapsed}})"),
        )
    }

    /// A download: bytes received of the total, once the server says it.
    pub fn bytes(quiet: bool) -> Self {
        Self::build(
            shown(quiet, std::io::stderr().is_terminal()),
            None,
            "{spinner} {msg} {bytes}/{total_bytes} [{bar:30}] {bytes_per_sec} ({elapsed})",
        )
    }

    /// A spinner with a message, for work whose length is not known.
    pub fn spinner(message: &str, quiet: bool) -> Self {
        let progress = Self::build(
            shown(quiet, std::io::stderr().is_terminal()),
            None,
            "{spinner} {msg} ({elapsed})",
        );
        progress.bar.set_message(message.to_string());
        progress.bar.enable_steady_tick(Duration::from_millis(120));
        progress
    }

    fn build(visible: bool, len: Option<u64>, template: &str) -> Self {
        if !visible {
            return Progress {
                bar: ProgressBar::hidden(),
            };
        }
        let bar = len.map_or_else(ProgressBar::no_length, ProgressBar::new);
        // The templates are constants of this module: a bad one is a bug
        // that the default style hides rather than a reason to fail a command.
        let style = ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        Progress { bar }
    }

    /// True when nothing is drawn.
    #[cfg(test)]
    fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Sets how far the work is, and its total when it became known.
    pub fn set(&self, position: u64, total: Option<u64>) {
        if let Some(total) = total {
            self.bar.set_length(total);
        }
        self.bar.set_position(position);
    }

    /// One more step done.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// The text beside the bar.
    pub fn message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Records a finished training epoch and its RMSE.
    pub fn epoch(&self, report: &EpochReport) {
        self.bar.set_position(report.epoch as u64);
        self.bar
            .set_message(format!("train RMSE {:.4}", report.train_rmse));
    }

    /// Prints a line on stderr without garbling the bar.
    pub fn println(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    /// A command that fails half-way leaves no bar behind its error message.
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Whether to draw: only on a terminal, and never with `--quiet`.
fn shown(quiet: bool, terminal: bool) -> bool {
    terminal && !quiet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_drawn_only_on_a_terminal_without_quiet() {
        assert!(shown(false, true));
        assert!(!shown(true, true), "--quiet on a terminal");
        assert!(!shown(false, false), "piped");
        assert!(!shown(true, false));
        // The premise: a wanted bar is a real one (a hidden bar has no
        // length), and an unwanted one draws nothing.
        assert_eq!(
            Progress::build(true, Some(3), "{bar}").bar.length(),
            Some(3)
        );
        let hidden = Progress::build(false, Some(3), "{bar}");
        assert!(hidden.is_hidden() && hidden.bar.length().is_none());
    }

    #[test]
    fn quiet_hides_every_shape_of_bar() {
        assert!(Progress::steps(20, "epoch", true).is_hidden());
        assert!(Progress::bytes(true).is_hidden());
        assert!(Progress::spinner("replaying", true).is_hidden());
    }

    #[test]
    fn a_hidden_bar_accepts_every_call() {
        let progress = Progress::steps(2, "fold", true);
        progress.set(1, Some(4));
        progress.inc();
        progress.message("RMSE 0.9".into());
        progress.println("fold 1: RMSE 0.9");
        progress.finish();
    }
}
