//! Criterion benchmarks of the two hot kernels: one SGD epoch over
//! ML-100K-sized synthetic data (per kernel this CPU supports), and top-10
//! selection over the ML-100K catalogue and a 60,000-item one: one request
//! at a time, and in groups, where the hand-written tile
//! (`ItemIndex::top_n_many`) is compared with the same product through the
//! `gemm` crate (sarah-quinones's, faer's engine) followed by the same
//! selection, end to end, and, on CPUs with AVX-512 BF16, with the bf16
//! candidate pass and its exact re-rank (the default there).
//!
//! Run with `cargo bench -p recstream-core --bench kernels`.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use recstream_core::recommend::Scratch;
use recstream_core::svd::kernels::{self, StepRates, StepRow};
use recstream_core::synth::{SyntheticSpec, generate, random_model};
use recstream_core::topn::{ItemIndex, Query, Scored, select_top_n};
use recstream_core::{Hyperparams, Model, Rating, Recommender};

type Step = fn(f32, f32, StepRow<'_>, &StepRates) -> f32;

struct Params {
    k: usize,
    bu: Vec<f32>,
    bi: Vec<f32>,
    pu: Vec<f32>,
    qi: Vec<f32>,
}

fn epoch(order: &[Rating], p: &mut Params, rates: &StepRates, step: Step) -> f32 {
    let k = p.k;
    let mut sum = 0.0;
    for r in order {
        let (u, i) = (r.user as usize, r.item as usize);
        let row = StepRow {
            bu: &mut p.bu[u],
            bi: &mut p.bi[i],
            pu: &mut p.pu[u * k..(u + 1) * k],
            qi: &mut p.qi[i * k..(i + 1) * k],
        };
        sum += step(r.value, 3.5, row, rates);
    }
    sum
}

fn sgd(c: &mut Criterion) {
    let mut data = generate(&SyntheticSpec::ML_100K);
    // Training visits ratings in a shuffled order; so does the benchmark.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..data.ratings.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.ratings.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let rates = StepRates::from(&Hyperparams::default());
    let mut group = c.benchmark_group("sgd_epoch_ml100k_k100");
    group.sample_size(30);
    let mut kernels_here: Vec<(&str, Step)> = vec![("portable", kernels::sgd_step)];
    #[cfg(target_arch = "x86_64")]
    {
        if kernels::avx2_available() {
            // SAFETY: AVX2 and FMA are available on this CPU.
            kernels_here.push(("avx2", |r, m, row, x| unsafe {
                kernels::avx2::sgd_step(r, m, row, x)
            }));
        }
        if kernels::avx512_available() {
            // SAFETY: AVX-512F is available on this CPU.
            kernels_here.push(("avx512", |r, m, row, x| unsafe {
                kernels::avx512::sgd_step(r, m, row, x)
            }));
        }
    }
    for (name, step) in kernels_here {
        let (nu, ni, k) = (data.users.len(), data.items.len(), 100);
        let mut p = Params {
            k,
            bu: vec![0.0; nu],
            bi: vec![0.0; ni],
            pu: vec![0.05; nu * k],
            qi: vec![0.05; ni * k],
        };
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| epoch(&data.ratings, &mut p, &rates, step))
        });
    }
    group.finish();
}

fn topn(c: &mut Criterion) {
    let mut group = c.benchmark_group("top10");
    for items in [1682usize, 60_000] {
        let recommender = Recommender::new(random_model(943, items, 100, 100, 1));
        let ids: Vec<String> = (1..=943).map(|u| u.to_string()).collect();
        let mut scratch = Scratch::default();
        let mut at = 0;
        group.bench_function(BenchmarkId::from_parameter(items), |b| {
            b.iter(|| {
                at = (at + 1) % ids.len();
                recommender.recommend_with(&ids[at], 10, &mut scratch)
            })
        });
    }
    group.finish();
}

/// Users of a group: factor rows, rated items.
struct Group<'a> {
    model: &'a Model,
    users: Vec<u32>,
}

impl Group<'_> {
    fn queries(&self) -> Vec<Query<'_>> {
        let (svd, seen) = (&self.model.svd, &self.model.seen);
        self.users
            .iter()
            .map(|&u| Query {
                factors: svd.user_row(u),
                n: 10,
                exclude: [seen.base_row(u), seen.added_row(u)],
            })
            .collect()
    }
}

/// The group's product through `gemm` (scores = bias + users x items, one
/// row per user), then the one-pass selection per user.
fn gemm_then_select(
    group: &Group<'_>,
    factor_major: &[f32],
    bias: &[f32],
    scores: &mut Vec<f32>,
    out: &mut [Vec<Scored>],
) {
    let svd = &group.model.svd;
    let (m, n, k) = (group.users.len(), svd.n_items(), svd.n_factors);
    let mut lhs = Vec::with_capacity(m * k);
    for &u in &group.users {
        lhs.extend_from_slice(svd.user_row(u));
    }
    scores.clear();
    for _ in 0..m {
        scores.extend_from_slice(bias);
    }
    // SAFETY: dst is m x n row-major (m * n floats), lhs m x k row-major,
    // rhs k x n row-major (factor_major has k * n floats); strides in elements.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            scores.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            factor_major.as_ptr(),
            1,
            n as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
    let seen = &group.model.seen;
    for ((&u, row), best) in group.users.iter().zip(scores.chunks_exact_mut(n)).zip(out) {
        select_top_n(row, 10, &[seen.base_row(u), seen.added_row(u)], best);
    }
}

fn grouped(c: &mut Criterion) {
    for items in [1682usize, 60_000] {
        let model = random_model(943, items, 100, 100, 1);
        let svd = &model.svd;
        let index = ItemIndex::build(svd);
        let tile = index.clone().without_bf16();
        let k = svd.n_factors;
        let mut factor_major = vec![0.0f32; k * items];
        for i in 0..items {
            for f in 0..k {
                factor_major[f * items + i] = svd.item_factors[i * k + f];
            }
        }
        let bias = svd.item_bias.clone();
        let mut group = c.benchmark_group(format!("grouped_top10_{items}"));
        if items > 10_000 {
            group.sample_size(10);
        }
        for size in [1usize, 8, 32, 128] {
            group.throughput(criterion::Throughput::Elements(size as u64));
            let mut at = 0u32;
            let next = |at: &mut u32| {
                let users = (0..size as u32).map(|i| (*at + i) % 943).collect();
                *at = (*at + size as u32) % 943;
                Group {
                    model: &model,
                    users,
                }
            };
            let mut out = vec![Vec::new(); size];
            group.bench_function(BenchmarkId::new("tile", size), |b| {
                b.iter(|| {
                    let g = next(&mut at);
                    tile.top_n_many(&g.queries(), &mut out);
                })
            });
            if index.uses_bf16() {
                group.bench_function(BenchmarkId::new("bf16_then_rerank", size), |b| {
                    b.iter(|| {
                        let g = next(&mut at);
                        index.top_n_many(&g.queries(), &mut out);
                    })
                });
            }
            let mut scores = Vec::new();
            group.bench_function(BenchmarkId::new("gemm_then_select", size), |b| {
                b.iter(|| {
                    let g = next(&mut at);
                    gemm_then_select(&g, &factor_major, &bias, &mut scores, &mut out);
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, sgd, topn, grouped);
criterion_main!(benches);
