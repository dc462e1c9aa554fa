//! Percentiles of a run, and the HDR histograms they are read from.
//!
//! Every timing in the harness goes into an HDR histogram with three
//! significant digits: recording is a constant-time increment however long
//! the run, so the probe does not slow down as it gathers samples, and a p99
//! or a max is exact to 0.1% instead of a mean that hides the tail. Values
//! above the highest trackable one are clamped to it rather than dropped
//! (`saturating_record`), so a stall still shows in the max.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::BenchError;

/// The highest value a latency histogram tracks: a minute in microseconds.
pub(crate) const MINUTE_US: u64 = 60_000_000;

/// The highest value a top-N histogram tracks: a minute in nanoseconds.
pub(crate) const MINUTE_NS: u64 = 60_000_000_000;

/// An empty histogram of values `1..=high`, three significant digits.
pub(crate) fn histogram(high: u64) -> Result<Histogram<u64>, BenchError> {
    Histogram::<u64>::new_with_bounds(1, high, 3)
        .map_err(|source| BenchError::Histogram { high, source })
}

/// Percentiles of a histogram.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
    /// Mean.
    pub mean: f64,
    /// Number of samples.
    pub count: u64,
}

impl From<&Histogram<u64>> for Percentiles {
    fn from(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
            count: h.len(),
        }
    }
}

/// The tail quantiles a [`cdf`] table adds after every whole percent.
const CDF_TAIL: [f64; 5] = [0.995, 0.999, 0.9995, 0.9999, 1.0];

/// A distribution as `(quantile, value)` pairs: every percent from 1 to 99,
/// then the tail in finer steps up to the max. About a hundred pairs: small
/// enough to keep with every run under `bench/results/`, and enough to draw
/// the CDF from (`bench/plot.py`), which five percentiles are not. Empty for
/// an empty histogram.
pub fn cdf(h: &Histogram<u64>) -> Vec<(f64, u64)> {
    if h.is_empty() {
        return Vec::new();
    }
    (1..100)
        .map(|p| f64::from(p) / 100.0)
        .chain(CDF_TAIL)
        .map(|q| (q, h.value_at_quantile(q)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cdf_table_rises_with_the_quantile_and_ends_at_the_max() -> Result<(), BenchError> {
        let mut h = histogram(MINUTE_US)?;
        assert!(cdf(&h).is_empty(), "no samples, no table");
        for v in 1..=10_000 {
            h.saturating_record(v);
        }
        let table = cdf(&h);
        assert_eq!(table.len(), 99 + CDF_TAIL.len());
        assert!(
            table
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1)
        );
        assert_eq!(table.last(), Some(&(1.0, h.max())));
        let (_, median) = table[49];
        assert!((4990..=5010).contains(&median), "{median}");
        Ok(())
    }

    #[test]
    fn both_ranges_the_harness_uses_can_be_created() {
        assert!(histogram(MINUTE_US).is_ok());
        assert!(histogram(MINUTE_NS).is_ok());
    }

    #[test]
    fn percentiles_read_the_tail_and_clamp_what_is_over_the_top() -> Result<(), BenchError> {
        let mut h = histogram(MINUTE_US)?;
        for v in 1..=1000 {
            h.saturating_record(v);
        }
        h.saturating_record(u64::MAX);
        let p = Percentiles::from(&h);
        assert_eq!(p.count, 1001);
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!((989..=991).contains(&p.p99), "{p:?}");
        assert!(
            p.max >= MINUTE_US && p.max < MINUTE_US + MINUTE_US / 500,
            "{p:?}"
        );
        Ok(())
    }
}
