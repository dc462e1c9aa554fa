//! The training progress bar: one tick per epoch with its training RMSE.
//!
//! Shown only when stderr is a terminal and `--quiet` was not given, so logs
//! and CI output stay free of control characters.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use recstream_core::svd::EpochReport;

/// A progress display for `n_epochs` epochs (hidden when not wanted).
pub struct EpochProgress {
    bar: ProgressBar,
}

impl EpochProgress {
    /// A bar on a terminal, nothing otherwise.
    pub fn new(n_epochs: usize, quiet: bool) -> Self {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(n_epochs as u64);
            let style = ProgressStyle::with_template(
                "{spinner} epoch {pos:>3}/{len} [{bar:30}] {msg} ({elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        };
        EpochProgress { bar }
    }

    /// Records a finished epoch.
    pub fn epoch(&self, report: &EpochReport) {
        self.bar.set_position(report.epoch as u64);
        self.bar
            .set_message(format!("train RMSE {:.4}", report.train_rmse));
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
