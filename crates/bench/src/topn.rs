//! `bench topn`: one recommendation at a time, against scoring and sorting everything.
//!
//! The peer is the obvious way to answer a top-N request, measured in the
//! same process on the same model: estimate every item the user has not
//! rated with a plain dot product, sort them all, keep n. recstream's way
//! (scoring over a transposed block layout, keeping the best n in a bounded
//! selection) must beat it by a margin worth its code. The two alternate in
//! blocks of requests so that both see the same machine load, after a
//! warm-up that neither is timed for; each call is timed alone into a
//! histogram (nanoseconds), because a mean over a shared 2-core machine
//! hides the tail. Answering 64 requests together, as the streaming worker
//! does, is timed as a third figure: per request, over the whole batch.
//! Last, grouped scoring as the worker does it: requests answered in groups
//! of 1, 8, 32 and 128 (one pass over the item factors per group), written
//! as the JSON the replies carry, the group sizes
//! taking turns in rounds so that all see the same machine load, each
//! reported as the median over the rounds of the time per request. On CPUs
//! with AVX-512 BF16 grouped scoring goes through a bf16 candidate pass
//! with an exact re-rank; the exact kernels alone are then timed in the
//! same rounds, as its peer.

use std::fmt;
use std::path::PathBuf;
use std::time::Instant;

use hdrhistogram::Histogram;
use recstream_core::recommend::{JsonAnswers, Scratch};
use recstream_core::svd::kernels::dot;
use recstream_core::synth::random_model;
use recstream_core::{Model, Recommender, modelfile};
use serde::Serialize;

use crate::BenchError;
use crate::percentiles::{MINUTE_NS, histogram};

/// Requests answered together in the batched figure (as the worker does).
const BATCH: usize = 64;

/// Requests of one method timed before switching to the other.
const BLOCK: usize = 500;

/// Requests answered, untimed, before the clock starts.
const WARM_UP: usize = 200;

/// Group sizes of the grouped-scoring figures.
pub const GROUP_SIZES: [usize; 4] = [1, 8, 32, 128];

/// Rounds of the grouped-scoring figures (each times every group size once).
const ROUNDS: usize = 15;

/// The model to benchmark.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// A model file.
    File(PathBuf),
    /// A random model of 1,000 users over this catalogue.
    Synthetic {
        /// Items in the catalogue.
        items: usize,
        /// Factors per item and user.
        factors: usize,
    },
}

impl ModelSource {
    /// The model, and what to call it in the report.
    fn load(&self) -> Result<(Model, String), BenchError> {
        match self {
            ModelSource::File(path) => {
                let model = modelfile::load(path).map_err(|source| BenchError::Model {
                    path: path.clone(),
                    source,
                })?;
                Ok((model, path.display().to_string()))
            }
            ModelSource::Synthetic { items, factors } => {
                let model = random_model(1000, *items, *factors, 100, 7);
                let label = model.meta.source.clone();
                Ok((model, label))
            }
        }
    }
}

/// How the top-N benchmark asks.
#[derive(Debug, Clone)]
pub struct TopnSpec {
    /// Recommendations per request.
    pub n: usize,
    /// Requests to time for each method (at least one).
    pub requests: usize,
}

/// One method's timings, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub mean: f64,
}

impl From<&Histogram<u64>> for Timing {
    /// From a histogram of nanoseconds.
    fn from(h: &Histogram<u64>) -> Self {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Timing {
            p50: us(0.5),
            p99: us(0.99),
            mean: h.mean() / 1000.0,
        }
    }
}

/// What the top-N benchmark found. As JSON through a `serde_json::Value`
/// its keys come out sorted, as `recstream bench topn --json` prints them.
#[derive(Debug, Clone, Serialize)]
pub struct TopnReport {
    /// The model file, or the random model's description.
    pub model: String,
    /// Items in the catalogue.
    pub items: usize,
    /// Factors per item.
    pub n_factors: usize,
    /// Recommendations per request.
    pub n: usize,
    /// Requests timed per method.
    pub requests: usize,
    /// recstream's method.
    pub partial_selection_us: Timing,
    /// The peer: score every item, sort them all.
    pub score_all_sort_all_us: Timing,
    /// How many times faster recstream is at the median.
    pub speedup_p50: f64,
    /// Per request, answering 64 at a time.
    pub batched_64_us_per_request: f64,
    /// Per request when answered in groups, one entry per group size in
    /// [`GROUP_SIZES`] order: the median over the rounds.
    pub grouped_us_per_request: Vec<GroupTiming>,
    /// Whether grouped scoring used the bf16 candidate pass.
    pub bf16: bool,
    /// The same with the exact kernels only, in the same rounds (equal to
    /// the above when the bf16 pass is not available).
    pub grouped_exact_us_per_request: Vec<GroupTiming>,
    /// Every known user's answer both ways, compared: how many users, how
    /// many answers were identical (items, order and scores), and the
    /// recall of the exact top n among the default path's.
    pub agreement: Agreement,
}

/// How the default path's answers compare with the exact kernels'.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    /// Users compared (every user the model knows).
    pub users: usize,
    /// Answers identical in items, order and scores.
    pub identical: usize,
    /// Fraction of the exact top-n items that the default path returned.
    pub recall: f64,
}

/// Compares both recommenders' answers for every user, in groups of 64.
fn agreement(
    recommender: &Recommender,
    exact: &Recommender,
    users: &[String],
    n: usize,
) -> Agreement {
    let asks: Vec<(&str, usize)> = users.iter().map(|u| (u.as_str(), n)).collect();
    let mut scratch = Scratch::default();
    let (mut identical, mut found, mut wanted) = (0usize, 0usize, 0usize);
    for group in asks.chunks(BATCH) {
        let got = recommender.recommend_many(group, &mut scratch);
        let want = exact.recommend_many(group, &mut scratch);
        for (got, want) in got.iter().zip(&want) {
            identical += usize::from(got == want);
            wanted += want.recommendations.len();
            found += want
                .recommendations
                .iter()
                .filter(|w| got.recommendations.iter().any(|g| g.iid == w.iid))
                .count();
        }
    }
    Agreement {
        users: users.len(),
        identical,
        recall: if wanted == 0 {
            1.0
        } else {
            found as f64 / wanted as f64
        },
    }
}

/// Time per request at one group size.
#[derive(Debug, Clone, Serialize)]
pub struct GroupTiming {
    /// Requests answered together.
    pub group: usize,
    /// Median over the rounds of the microseconds per request.
    pub us_per_request: f64,
}

/// Times top-N requests on the model from `source`, both ways, as `spec` says.
pub fn run(source: &ModelSource, spec: &TopnSpec) -> Result<TopnReport, BenchError> {
    let (model, label) = source.load()?;
    let users = known_users(&model);
    if users.is_empty() {
        return Err(BenchError::NoUsers);
    }
    let recommender = Recommender::new(model);
    let exact = recommender.clone().without_bf16();
    let requests = spec.requests.max(1);
    let mut timer = Timer {
        recommender: &recommender,
        exact: &exact,
        users: &users,
        n: spec.n,
        scratch: Scratch::default(),
    };
    timer.warm_up();
    let (fast, naive) = timer.one_at_a_time(requests)?;
    let batched = timer.batched(requests);
    let (grouped, grouped_exact) = timer.grouped(requests);
    let model = recommender.model();
    let (fast, naive) = (Timing::from(&fast), Timing::from(&naive));
    Ok(TopnReport {
        model: label,
        items: model.items.len(),
        n_factors: model.svd.n_factors,
        n: spec.n,
        requests,
        speedup_p50: naive.p50 / fast.p50.max(1e-9),
        partial_selection_us: fast,
        score_all_sort_all_us: naive,
        batched_64_us_per_request: batched,
        grouped_us_per_request: grouped,
        bf16: recommender.uses_bf16(),
        grouped_exact_us_per_request: grouped_exact,
        agreement: agreement(&recommender, &exact, &users, spec.n),
    })
}

/// The raw ids of the users the model has factors for.
fn known_users(model: &Model) -> Vec<String> {
    (0..model.users.len() as u32)
        .filter(|&u| model.svd.knows_user(u))
        .filter_map(|u| model.users.raw(u).map(|id| id.as_str().to_string()))
        .collect()
}

/// Asks for the users' recommendations in turn, timing each method.
struct Timer<'a> {
    recommender: &'a Recommender,
    /// The same model on the exact kernels only.
    exact: &'a Recommender,
    /// Never empty.
    users: &'a [String],
    n: usize,
    scratch: Scratch,
}

impl<'a> Timer<'a> {
    /// The user of the `i`th request.
    fn user(&self, i: usize) -> &'a str {
        let users: &'a [String] = self.users;
        &users[i % users.len()]
    }

    /// Warms caches and the branch predictor before timing.
    fn warm_up(&mut self) {
        for uid in self.users.iter().take(WARM_UP) {
            let answer = self
                .recommender
                .recommend_with(uid, self.n, &mut self.scratch);
            std::hint::black_box(answer);
        }
    }

    /// Nanoseconds per request of recstream's method and of the peer,
    /// alternating in blocks so that both see the same machine load.
    fn one_at_a_time(
        &mut self,
        requests: usize,
    ) -> Result<(Histogram<u64>, Histogram<u64>), BenchError> {
        let (mut fast, mut naive) = (histogram(MINUTE_NS)?, histogram(MINUTE_NS)?);
        for start in (0..requests).step_by(BLOCK) {
            let block = start..(start + BLOCK).min(requests);
            for i in block.clone() {
                let t = Instant::now();
                let answer =
                    self.recommender
                        .recommend_with(self.user(i), self.n, &mut self.scratch);
                std::hint::black_box(answer);
                fast.saturating_record(t.elapsed().as_nanos() as u64);
            }
            for i in block {
                let t = Instant::now();
                let model = self.recommender.model();
                std::hint::black_box(score_all_then_sort(model, self.user(i), self.n));
                naive.saturating_record(t.elapsed().as_nanos() as u64);
            }
        }
        Ok((fast, naive))
    }

    /// Microseconds per request when [`BATCH`] are answered together.
    fn batched(&mut self, requests: usize) -> f64 {
        let asks: Vec<(&str, usize)> = self.users.iter().map(|u| (u.as_str(), self.n)).collect();
        let started = Instant::now();
        let mut answered = 0usize;
        while answered < requests {
            let from = answered % asks.len();
            let chunk = &asks[from..(from + BATCH).min(asks.len())];
            std::hint::black_box(self.recommender.recommend_many(chunk, &mut self.scratch));
            answered += chunk.len();
        }
        started.elapsed().as_secs_f64() * 1e6 / answered as f64
    }
}

impl Timer<'_> {
    /// Microseconds per request at each of [`GROUP_SIZES`], with the
    /// default path and with the exact kernels only: every round answers
    /// about `requests / ROUNDS` requests (whole groups, at least one) at
    /// each size with each in turn; the median round counts.
    fn grouped(&mut self, requests: usize) -> (Vec<GroupTiming>, Vec<GroupTiming>) {
        let per_round = requests.div_ceil(ROUNDS).max(1);
        let mut rounds: Vec<[Vec<f64>; 2]> = vec![Default::default(); GROUP_SIZES.len()];
        let mut at = 0usize;
        for _ in 0..ROUNDS {
            for (&size, times) in GROUP_SIZES.iter().zip(rounds.iter_mut()) {
                for (recommender, times) in [self.recommender, self.exact].into_iter().zip(times) {
                    times.push(self.time_groups(recommender, size, per_round, at));
                }
                at = (at + per_round) % self.users.len();
            }
        }
        let medians = |which: usize| {
            GROUP_SIZES
                .iter()
                .zip(&rounds)
                .map(|(&group, times)| {
                    let mut times = times[which].clone();
                    times.sort_by(f64::total_cmp);
                    GroupTiming {
                        group,
                        us_per_request: times[times.len() / 2],
                    }
                })
                .collect()
        };
        (medians(0), medians(1))
    }

    /// Microseconds per request answering about `requests` requests in
    /// groups of `size`, starting from user `at`.
    fn time_groups(
        &mut self,
        recommender: &Recommender,
        size: usize,
        requests: usize,
        at: usize,
    ) -> f64 {
        let users = self.users;
        let group_at = |g: usize| -> Vec<(&str, usize)> {
            (0..size)
                .map(|i| (users[(at + g * size + i) % users.len()].as_str(), self.n))
                .collect()
        };
        let groups: Vec<Vec<(&str, usize)>> = (0..requests.div_ceil(size)).map(group_at).collect();
        let mut answers = JsonAnswers::default();
        let started = Instant::now();
        for group in &groups {
            recommender.answer_many_json(group, &mut self.scratch, &mut answers);
            std::hint::black_box(&answers);
        }
        started.elapsed().as_secs_f64() * 1e6 / (groups.len() * size) as f64
    }
}

/// The straightforward method: estimate every unrated item, sort them all, keep n.
fn score_all_then_sort(model: &Model, uid: &str, n: usize) -> Vec<(u32, f32)> {
    let Some(u) = model.users.get(uid) else {
        return Vec::new();
    };
    let svd = &model.svd;
    let base = svd.global_mean + svd.user_bias[u as usize];
    let mut all: Vec<(u32, f32)> = (0..svd.n_items() as u32)
        .filter(|&i| !model.seen.contains(u, i))
        .map(|i| {
            (
                i,
                base + svd.item_bias[i as usize] + dot(svd.item_row(i), svd.user_row(u)),
            )
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1));
    all.truncate(n);
    all
}

impl fmt::Display for TopnReport {
    /// The table `recstream bench topn` prints: both methods, the ratio,
    /// and the batched figure.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (fast, naive) = (&self.partial_selection_us, &self.score_all_sort_all_us);
        writeln!(
            f,
            "{}: {} items x {} factors, top-{} over {} requests (single thread)",
            self.model, self.items, self.n_factors, self.n, self.requests
        )?;
        writeln!(
            f,
            "  recstream (transposed scoring + partial selection): p50 {:>8.2} us  p99 {:>8.2} us",
            fast.p50, fast.p99
        )?;
        writeln!(
            f,
            "  baseline  (dot per item, then sort every item):     p50 {:>8.2} us  p99 {:>8.2} us",
            naive.p50, naive.p99
        )?;
        writeln!(f, "  speed-up at the median: {:.1}x", self.speedup_p50)?;
        write!(
            f,
            "  answered {BATCH} at a time (as the streaming worker does): {:.2} us per request",
            self.batched_64_us_per_request
        )?;
        let path = if self.bf16 {
            "bf16 pass + exact re-rank"
        } else {
            "exact kernels"
        };
        for (g, exact) in self
            .grouped_us_per_request
            .iter()
            .zip(&self.grouped_exact_us_per_request)
        {
            write!(
                f,
                "\n  grouped scoring, groups of {:>3}: {:>8.2} us per request ({path}), exact kernels only {:>8.2} us (medians of {ROUNDS} rounds)",
                g.group, g.us_per_request, exact.us_per_request
            )?;
        }
        let a = &self.agreement;
        write!(
            f,
            "\n  {path} against the exact kernels: {} of {} users' answers identical, recall@{} {:.4}",
            a.identical, a.users, self.n, a.recall
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_baseline_agrees_with_the_recommender_on_the_best_items() {
        let model = random_model(20, 300, 8, 30, 3);
        let recommender = Recommender::new(model.clone());
        let mut scratch = Scratch::default();
        for uid in known_users(&model).iter().take(10) {
            let naive = score_all_then_sort(&model, uid, 10);
            assert_eq!(naive.len(), 10);
            assert!(naive.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
            let u = model.users.get(uid).unwrap_or_default();
            assert!(naive.iter().all(|&(i, _)| !model.seen.contains(u, i)));
            let mut naive: Vec<String> = naive
                .iter()
                .filter_map(|&(i, _)| model.items.raw(i).map(|id| id.as_str().to_string()))
                .collect();
            let answer = recommender.recommend_with(uid, 10, &mut scratch);
            let mut fast: Vec<String> = answer
                .recommendations
                .iter()
                .map(|r| r.iid.as_str().to_string())
                .collect();
            naive.sort();
            fast.sort();
            assert_eq!(naive, fast, "user {uid}");
        }
    }

    #[test]
    fn a_synthetic_run_reports_both_methods_and_prints_the_table() -> Result<(), BenchError> {
        let source = ModelSource::Synthetic {
            items: 200,
            factors: 4,
        };
        let spec = TopnSpec { n: 5, requests: 30 };
        let report = run(&source, &spec)?;
        assert_eq!(
            (report.items, report.n_factors, report.requests),
            (200, 4, 30)
        );
        assert!(report.partial_selection_us.p50 > 0.0 && report.speedup_p50 > 0.0);
        let text = report.to_string();
        assert!(
            text.starts_with("random 1000x200x4: 200 items x 4 factors, top-5 over 30 requests")
        );
        assert_eq!(text.lines().count(), 6 + GROUP_SIZES.len());
        assert_eq!(report.agreement.users, 1000);
        assert_eq!(
            report.agreement.identical, 1000,
            "the same answers both ways"
        );
        assert_eq!(report.agreement.recall, 1.0);
        let groups: Vec<usize> = report
            .grouped_us_per_request
            .iter()
            .map(|g| g.group)
            .collect();
        assert_eq!(groups, GROUP_SIZES);
        assert!(
            report
                .grouped_us_per_request
                .iter()
                .all(|g| g.us_per_request > 0.0)
        );
        assert!(text.contains("grouped scoring, groups of 128:"));
        Ok(())
    }
}
