//! Criterion benchmarks of the two hot kernels: one SGD epoch over
//! ML-100K-sized synthetic data (per kernel this CPU supports), and top-10
//! selection over the ML-100K catalogue and a 60,000-item one.
//!
//! Run with `cargo bench -p recstream-core --bench kernels`.

// criterion_group! generates undocumented functions.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use recstream_core::recommend::Scratch;
use recstream_core::svd::kernels::{self, StepRates, StepRow};
use recstream_core::synth::{SyntheticSpec, generate, random_model};
use recstream_core::{Hyperparams, Rating, Recommender};

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

criterion_group!(benches, sgd, topn);
criterion_main!(benches);
