//! Percentiles cut into windows of a run, so that a drift over minutes shows.
//!
//! A ten-minute run's p99 can look fine while the last minute is ten times
//! worse than the first: the good minutes outvote the bad one. With
//! `--every N` the latency and freshness probes also keep one histogram per
//! measure for the current N seconds, close it into a [`Window`] when the
//! time is up (handing it to a callback at once, so that a long run shows
//! its progress on stderr), and start afresh. Without windows nothing extra
//! is recorded and the one window's end is a century away, so the probes'
//! `select!` loops need no special case.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::BenchError;
use crate::percentiles::{MINUTE_US, Percentiles, histogram};

/// Percentiles of one stretch of a run, so that a drift over minutes shows
/// instead of melting into the whole run's percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// End of the stretch, seconds since the run started.
    pub end_s: u64,
    /// Each measure's percentiles over the stretch, by name.
    #[serde(flatten)]
    pub measures: BTreeMap<&'static str, Percentiles>,
}

impl fmt::Display for Window {
    /// One line: `[  60 s] round_trip p50 4.1 / p99 12.3 / max 40.2 ms (59998)`,
    /// measures separated by `; `.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:>4} s] ", self.end_s)?;
        let ms = |us: u64| us as f64 / 1000.0;
        for (i, (name, p)) in self.measures.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(
                f,
                "{} p50 {:.1} / p99 {:.1} / max {:.1} ms ({})",
                name.trim_end_matches("_us"),
                ms(p.p50),
                ms(p.p99),
                ms(p.max),
                p.count
            )?;
        }
        Ok(())
    }
}

/// When there are no windows, the one window "ends" this far away (a
/// century: far beyond any run, well within what `Instant` can add).
const NO_WINDOW_END: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Histograms that are cut into a [`Window`] every `every`.
pub(crate) struct Windows {
    every: Option<Duration>,
    started: Instant,
    next_end: Instant,
    names: &'static [&'static str],
    current: Vec<Histogram<u64>>,
    done: Vec<Window>,
}

impl Windows {
    /// Windows of `every` (none when `None` or zero) over the measures
    /// `names`, recorded by index in that order, in microseconds.
    pub(crate) fn new(
        every: Option<Duration>,
        names: &'static [&'static str],
    ) -> Result<Self, BenchError> {
        let every = every.filter(|d| !d.is_zero());
        let started = Instant::now();
        let current = names
            .iter()
            .map(|_| histogram(MINUTE_US))
            .collect::<Result<_, _>>()?;
        Ok(Windows {
            every,
            started,
            next_end: started + every.unwrap_or(NO_WINDOW_END),
            names,
            current,
            done: Vec::new(),
        })
    }

    /// When the current window ends (far away when there are no windows).
    pub(crate) fn next_end(&self) -> Instant {
        self.next_end
    }

    /// Records `value` for the measure at index `measure` of the names.
    pub(crate) fn record(&mut self, measure: usize, value: u64) {
        if self.every.is_some()
            && let Some(h) = self.current.get_mut(measure)
        {
            h.saturating_record(value);
        }
    }

    /// Closes every window that ended by `now`, handing each to `report`.
    pub(crate) fn roll(&mut self, now: Instant, report: &mut impl FnMut(&Window)) {
        let Some(every) = self.every else { return };
        while now >= self.next_end {
            let end = self.next_end;
            self.close(end, report);
            self.next_end = end + every;
        }
    }

    /// Closes the last, partial window if it holds anything.
    pub(crate) fn finish(mut self, report: &mut impl FnMut(&Window)) -> Vec<Window> {
        if self.every.is_some() && self.current.iter().any(|h| !h.is_empty()) {
            self.close(Instant::now(), report);
        }
        self.done
    }

    fn close(&mut self, end: Instant, report: &mut impl FnMut(&Window)) {
        let window = Window {
            end_s: end.duration_since(self.started).as_secs_f64().round() as u64,
            measures: self
                .names
                .iter()
                .zip(&self.current)
                .map(|(name, h)| (*name, Percentiles::from(h)))
                .collect(),
        };
        report(&window);
        self.done.push(window);
        for h in &mut self.current {
            h.reset();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["round_trip_us", "timestamp_to_timestamp_us"];

    #[test]
    fn without_windows_nothing_is_recorded_or_reported() -> Result<(), BenchError> {
        let mut windows = Windows::new(None, NAMES)?;
        windows.record(0, 5);
        let mut reported = 0;
        windows.roll(Instant::now() + Duration::from_secs(3600), &mut |_| {
            reported += 1
        });
        assert!(windows.next_end() > Instant::now() + Duration::from_secs(3600));
        assert!(windows.finish(&mut |_| reported += 1).is_empty());
        assert_eq!(reported, 0);
        Ok(())
    }

    #[test]
    fn every_window_that_ended_is_closed_and_the_partial_last_one_too() -> Result<(), BenchError> {
        let mut windows = Windows::new(Some(Duration::from_secs(10)), NAMES)?;
        windows.record(0, 2_000);
        windows.record(1, 3_000);
        let mut ends = Vec::new();
        let later = windows.next_end() + Duration::from_secs(15);
        windows.roll(later, &mut |w| ends.push(w.end_s));
        assert_eq!(ends, [10, 20]);
        windows.record(0, 1_000);
        let done = windows.finish(&mut |w| ends.push(w.end_s));
        assert_eq!(done.len(), 3);
        assert_eq!(done[0].measures["round_trip_us"].count, 1);
        assert_eq!(done[1].measures["round_trip_us"].count, 0);
        assert_eq!(done[2].measures["round_trip_us"].count, 1);
        Ok(())
    }

    #[test]
    fn a_window_prints_as_one_line_in_milliseconds() -> Result<(), BenchError> {
        let mut h = histogram(MINUTE_US)?;
        h.saturating_record(4_100);
        let p = Percentiles::from(&h);
        let window = Window {
            end_s: 60,
            measures: [("round_trip_us", p.clone()), ("freshness_us", p)]
                .into_iter()
                .collect(),
        };
        assert_eq!(
            window.to_string(),
            "[  60 s] freshness p50 4.1 / p99 4.1 / max 4.1 ms (1); round_trip p50 4.1 / p99 4.1 / max 4.1 ms (1)"
        );
        Ok(())
    }
}
