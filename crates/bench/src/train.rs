//! `bench train`: whole training runs, timed as a user would experience them, with peak memory.
//!
//! The figure to compare is scikit-surprise's `SVD.fit` on the same data
//! with the same hyper-parameters (`bench/compare_train.py` runs the peer;
//! BENCHMARKS.md puts the two side by side). Reading or generating the data
//! is timed once and reported apart; then training is repeated and the
//! median fit reported, because one run on a shared machine is noise. Peak
//! resident memory (Linux's `VmHWM`) covers the whole process, data
//! included, as `/usr/bin/time` would report it.

use std::fmt;

use recstream_core::svd::kernels::kernel_name;
use recstream_core::synth::SyntheticSpec;
use recstream_core::{Dataset, FitConfig, Model};
use serde::Serialize;

use crate::BenchError;

/// A training benchmark: what to train with, how often, and what the data was.
#[derive(Debug, Clone)]
pub struct TrainSpec<'a> {
    /// What the data is called in the report (a path, or the synthetic spec).
    pub label: String,
    /// How long reading or generating the data took.
    pub load_seconds: f64,
    /// Hyper-parameters, threads and scale.
    pub config: FitConfig<'a>,
    /// Training runs to time (at least one).
    pub repeat: usize,
}

/// One timed training run.
#[derive(Debug, Clone, Copy)]
pub struct FitRun {
    /// Which run, from 1.
    pub run: usize,
    /// Wall time of the SGD epochs.
    pub fit_seconds: f64,
    /// Training RMSE of the last epoch.
    pub train_rmse: Option<f64>,
}

impl fmt::Display for FitRun {
    /// `run 1: fit 9.311 s, train RMSE 0.7159`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "run {}: fit {:.3} s, train RMSE {:.4}",
            self.run,
            self.fit_seconds,
            self.train_rmse.unwrap_or(f64::NAN)
        )
    }
}

/// What the training benchmark found. As JSON through a `serde_json::Value`
/// its keys come out sorted, as `recstream bench train --json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    /// The data's label.
    pub data: String,
    /// Ratings trained on.
    pub ratings: usize,
    /// Users in the data.
    pub users: usize,
    /// Items in the data.
    pub items: usize,
    /// Reading or generating the data.
    pub load_seconds: f64,
    /// Training threads.
    pub threads: usize,
    /// The SIMD kernel the dot products ran on.
    pub kernel: &'static str,
    /// Latent factors.
    pub n_factors: usize,
    /// SGD passes.
    pub n_epochs: usize,
    /// Each run's fit time.
    pub fit_seconds: Vec<f64>,
    /// Their median.
    pub median_fit_seconds: f64,
    /// Training RMSE of the last run (NaN, printed as null, if unknown).
    pub train_rmse: f64,
    /// Peak resident memory of the process, MiB (Linux only).
    pub peak_rss_mib: Option<u64>,
}

/// Trains on `data` as `spec` says, `spec.repeat` times, handing each run's
/// figures to `on_run` as it finishes.
pub fn run(
    data: &Dataset,
    spec: &TrainSpec<'_>,
    mut on_run: impl FnMut(&FitRun),
) -> Result<TrainReport, BenchError> {
    let mut fits = Vec::new();
    let mut rmse = f64::NAN;
    for run in 1..=spec.repeat.max(1) {
        let model = Model::fit(data, &spec.config, &mut |_| {})
            .map_err(|source| BenchError::Training { run, source })?;
        let fit = FitRun {
            run,
            fit_seconds: model.meta.fit_seconds,
            train_rmse: model.meta.train_rmse,
        };
        on_run(&fit);
        fits.push(fit.fit_seconds);
        rmse = fit.train_rmse.unwrap_or(f64::NAN);
    }
    Ok(TrainReport {
        data: spec.label.clone(),
        ratings: data.len(),
        users: data.users.len(),
        items: data.items.len(),
        load_seconds: spec.load_seconds,
        threads: spec.config.threads,
        kernel: kernel_name(),
        n_factors: spec.config.params.n_factors,
        n_epochs: spec.config.params.n_epochs,
        median_fit_seconds: median(&fits),
        fit_seconds: fits,
        train_rmse: rmse,
        peak_rss_mib: peak_rss_mib(),
    })
}

impl fmt::Display for TrainReport {
    /// The one line `recstream bench train` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ratings, {} threads ({} kernel): load {:.2} s, fit median {:.3} s over {} run(s), train RMSE {:.4}, peak RSS ",
            self.data,
            self.ratings,
            self.threads,
            self.kernel,
            self.load_seconds,
            self.median_fit_seconds,
            self.fit_seconds.len(),
            self.train_rmse,
        )?;
        match self.peak_rss_mib {
            Some(mib) => write!(f, "{mib} MiB"),
            None => f.write_str("null MiB"),
        }
    }
}

/// What synthetic data is called in the report: `synthetic UxIxR seed S`.
pub fn synthetic_label(spec: &SyntheticSpec) -> String {
    format!(
        "synthetic {}x{}x{} seed {}",
        spec.users, spec.items, spec.ratings, spec.seed
    )
}

/// The middle value (the upper one of an even count); NaN when empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Peak resident memory of this process (VmHWM), in MiB, on Linux.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use recstream_core::Hyperparams;
    use recstream_core::synth::{SyntheticSpec, generate};

    #[test]
    fn the_median_is_the_middle_run_or_the_upper_middle_one() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn every_run_is_reported_and_the_line_names_the_data_and_kernel() -> Result<(), BenchError> {
        let data = generate(&SyntheticSpec {
            users: 30,
            items: 40,
            ratings: 300,
            seed: 1,
        });
        let spec = TrainSpec {
            label: "tiny".into(),
            load_seconds: 0.0,
            config: FitConfig {
                params: Hyperparams {
                    n_factors: 4,
                    n_epochs: 2,
                    ..Hyperparams::with_seed(1)
                },
                threads: 1,
                scale: None,
                titles: None,
                source: "tiny".into(),
            },
            repeat: 2,
        };
        let mut runs = Vec::new();
        let report = run(&data, &spec, |fit| runs.push(fit.to_string()))?;
        assert_eq!(runs.len(), 2);
        assert!(runs[1].starts_with("run 2: fit "), "{runs:?}");
        assert_eq!(report.fit_seconds.len(), 2);
        assert!(report.train_rmse.is_finite());
        let line = report.to_string();
        let start = format!("tiny: {} ratings, 1 threads (", data.len());
        assert!(line.starts_with(&start), "{line}");
        assert!(line.contains(" over 2 run(s), "), "{line}");
        Ok(())
    }
}
