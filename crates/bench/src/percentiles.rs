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

#[cfg(test)]
mod tests {
    use super::*;

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
