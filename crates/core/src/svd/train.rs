//! Training: surprise's SVD algorithm, sequential or block-parallel.
//!
//! Sequential training is the reference: factors drawn from
//! `normal(init_mean, init_std_dev)`, biases at zero, then `n_epochs` passes
//! of per-rating SGD over the ratings in a random order (surprise itself
//! visits them in file order). With more
//! than one thread we use blocked SGD (the "DSGD" stratification): users and
//! items are cut into `t` blocks of roughly equal rating counts, and each
//! sub-epoch runs `t` blocks that share no user and no item in parallel. No
//! two threads ever touch the same row, so the parallel path needs no locks or
//! atomics and is deterministic for a given seed and thread count.

use std::time::{Duration, Instant};

use rand::{RngCore, SeedableRng};
use rand_distr::{Distribution, Normal};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::data::{Rating, RatingScale};

use super::kernels::{self, Kernel, StepRates, StepRow};
use super::padded::PaddedMatrix;
use super::{Hyperparams, SvdModel};

/// Progress of training after one epoch.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochReport {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Total epochs.
    pub n_epochs: usize,
    /// RMSE of the errors met during the epoch (before each step).
    pub train_rmse: f64,
    /// Time since training started.
    pub elapsed: Duration,
}

/// Why a model could not be trained.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TrainError {
    /// A hyper-parameter is unusable.
    #[error("invalid hyper-parameters: {0}")]
    InvalidParams(String),
    /// There is nothing to learn from.
    #[error("no ratings to train on")]
    NoRatings,
    /// A rating refers to a user or item beyond the declared sizes.
    #[error(
        "rating {index} refers to user {user} / item {item} beyond {n_users} users / {n_items} items"
    )]
    OutOfRange {
        /// Position of the rating.
        index: usize,
        /// Its user index.
        user: u32,
        /// Its item index.
        item: u32,
        /// Declared number of users.
        n_users: usize,
        /// Declared number of items.
        n_items: usize,
    },
    /// The rating scale is not a finite range with min <= max.
    #[error("{0}")]
    InvalidScale(String),
    /// A rating is not a finite number within the rating scale.
    #[error(
        "rating {value} (user {user}, item {item}, rating #{position} of the data) is outside the rating scale {min}..={max}"
    )]
    RatingOutOfScale {
        /// 1-based position of the rating in the data.
        position: usize,
        /// Its user: the raw id from [`Model::fit`](crate::Model::fit), else the dense index.
        user: String,
        /// Its item, likewise.
        item: String,
        /// The rating.
        value: f32,
        /// Lowest allowed.
        min: f32,
        /// Highest allowed.
        max: f32,
    },
    /// SGD blew up: some biases or factors became NaN or infinite.
    #[error(
        "training diverged: {count} non-finite parameters (NaN or infinity); lower the learning rate or check the ratings' scale"
    )]
    Diverged {
        /// How many parameters are not finite.
        count: usize,
    },
    /// `threads` was zero.
    #[error("threads must be at least 1")]
    NoThreads,
    /// The thread pool could not start.
    #[error("cannot start {threads} training threads: {reason}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// What went wrong.
        reason: String,
    },
}

/// Options of a training run that do not change the model definition.
#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    /// 1 for sequential SGD, more for blocked parallel SGD.
    pub threads: usize,
    /// Rating range the estimates are clipped to.
    pub scale: RatingScale,
}

/// Trains a model on `ratings`, whose indices are below `n_users` / `n_items`
/// and whose values lie within `options.scale`.
/// Users and items with no rating keep their random factors but count as unknown.
/// A run whose parameters end up NaN or infinite is an error, never a model.
pub fn train(
    ratings: &[Rating],
    n_users: usize,
    n_items: usize,
    params: &Hyperparams,
    options: TrainOptions,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<SvdModel, TrainError> {
    params.validate().map_err(TrainError::InvalidParams)?;
    if ratings.is_empty() {
        return Err(TrainError::NoRatings);
    }
    if options.threads == 0 {
        return Err(TrainError::NoThreads);
    }
    if let Some((index, r)) = ratings
        .iter()
        .enumerate()
        .find(|(_, r)| r.user as usize >= n_users || r.item as usize >= n_items)
    {
        return Err(TrainError::OutOfRange {
            index,
            user: r.user,
            item: r.item,
            n_users,
            n_items,
        });
    }
    options.scale.check().map_err(TrainError::InvalidScale)?;
    if let Some((index, r)) = first_out_of_scale(ratings, options.scale) {
        return Err(TrainError::RatingOutOfScale {
            position: index + 1,
            user: format!("index {}", r.user),
            item: format!("index {}", r.item),
            value: r.value,
            min: options.scale.min,
            max: options.scale.max,
        });
    }
    let mut model = initial_model(ratings, n_users, n_items, params, options.scale);
    let k = model.n_factors;
    let mut user_rows = PaddedMatrix::from_rows(&model.user_factors, k);
    let mut item_rows = PaddedMatrix::from_rows(&model.item_factors, k);
    let mut rows = Rows {
        stride: user_rows.stride(),
        mu: model.global_mean,
        user_bias: &mut model.user_bias,
        user_factors: user_rows.as_mut_slice(),
        item_bias: &mut model.item_bias,
        item_factors: item_rows.as_mut_slice(),
    };
    if options.threads == 1 {
        train_sequential(&mut rows, ratings, params, on_epoch);
    } else {
        let counts = (&model.user_counts[..], &model.item_counts[..]);
        train_blocked(rows, counts, ratings, params, options.threads, on_epoch)?;
    }
    user_rows.write_back(&mut model.user_factors);
    item_rows.write_back(&mut model.item_factors);
    match model.count_non_finite() {
        0 => Ok(model),
        count => Err(TrainError::Diverged { count }),
    }
}

/// The first rating that is not a finite number within `scale`, with its index.
pub(crate) fn first_out_of_scale(
    ratings: &[Rating],
    scale: RatingScale,
) -> Option<(usize, Rating)> {
    ratings
        .iter()
        .position(|r| !scale.contains(r.value))
        .map(|at| (at, ratings[at]))
}

/// Random factors, zero biases, the training counts and the global mean.
fn initial_model(
    ratings: &[Rating],
    n_users: usize,
    n_items: usize,
    params: &Hyperparams,
    scale: RatingScale,
) -> SvdModel {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(params.seed);
    let k = params.n_factors;
    let mut draw = |n: usize| -> Vec<f32> {
        match Normal::new(params.init_mean, params.init_std_dev) {
            Ok(normal) => (0..n).map(|_| normal.sample(&mut rng)).collect(),
            Err(_) => vec![params.init_mean; n],
        }
    };
    let user_factors = draw(n_users * k);
    let item_factors = draw(n_items * k);
    let mut user_counts = vec![0u32; n_users];
    let mut item_counts = vec![0u32; n_items];
    let mut sum = 0.0f64;
    for r in ratings {
        user_counts[r.user as usize] += 1;
        item_counts[r.item as usize] += 1;
        sum += f64::from(r.value);
    }
    let global_mean = if params.biased {
        (sum / ratings.len() as f64) as f32
    } else {
        0.0
    };
    SvdModel {
        n_factors: k,
        global_mean,
        scale,
        user_bias: vec![0.0; n_users],
        item_bias: vec![0.0; n_items],
        user_factors,
        item_factors,
        user_counts,
        item_counts,
    }
}

/// Per-rating SGD over the whole data in a random order (drawn once, or
/// again every epoch with `reshuffle`).
fn train_sequential(
    rows: &mut Rows<'_>,
    ratings: &[Rating],
    params: &Hyperparams,
    on_epoch: &mut dyn FnMut(&EpochReport),
) {
    let started = Instant::now();
    let rates = StepRates::from(params);
    // A different stream from the initialisation's, so that changing
    // n_factors does not change the visiting order.
    let mut rng =
        Xoshiro256PlusPlus::seed_from_u64(params.seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
    let mut order = ratings.to_vec();
    let kernel = Kernel::detect();
    for epoch in 1..=params.n_epochs {
        if epoch == 1 || params.reshuffle {
            shuffle(&mut order, &mut rng);
        }
        let squared = run_epoch(kernel, &order, rows, &rates);
        on_epoch(&EpochReport {
            epoch,
            n_epochs: params.n_epochs,
            train_rmse: (squared / order.len() as f64).sqrt(),
            elapsed: started.elapsed(),
        });
    }
}

/// Blocked parallel SGD: `threads` strata per epoch, each a set of
/// `threads` (user block, item block) pairs that share no row.
fn train_blocked(
    rows: Rows<'_>,
    (user_counts, item_counts): (&[u32], &[u32]),
    ratings: &[Rating],
    params: &Hyperparams,
    threads: usize,
    on_epoch: &mut dyn FnMut(&EpochReport),
) -> Result<(), TrainError> {
    let started = Instant::now();
    let rates = StepRates::from(params);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| TrainError::ThreadPool {
            threads,
            reason: e.to_string(),
        })?;
    let b = threads;
    let user_bounds = balanced_bounds(user_counts, b);
    let item_bounds = balanced_bounds(item_counts, b);
    let mut buckets = bucketize(ratings, &user_bounds, &item_bounds);
    let (stride, mu) = (rows.stride, rows.mu);
    let kernel = Kernel::detect();
    let Rows {
        user_bias,
        user_factors,
        item_bias,
        item_factors,
        ..
    } = rows;

    for epoch in 1..=params.n_epochs {
        let mut squared = 0.0;
        for stratum in 0..b {
            let mut user_rows = split_rows(user_factors, user_bias, &user_bounds, stride, mu);
            let mut item_rows: Vec<Option<Rows<'_>>> =
                split_rows(item_factors, item_bias, &item_bounds, stride, mu)
                    .into_iter()
                    .map(Some)
                    .collect();
            let mut tasks = Vec::with_capacity(b);
            let stratum_buckets = buckets
                .iter_mut()
                .enumerate()
                .filter(|(at, _)| at % b == (at / b + stratum) % b)
                .map(|(_, bucket)| bucket);
            for (t, bucket) in stratum_buckets.enumerate() {
                let items = item_rows[(t + stratum) % b].take();
                let users = std::mem::replace(&mut user_rows[t], Rows::empty(stride, mu));
                let seed = mix_seed(params.seed, epoch, stratum, t);
                if let Some(items) = items {
                    tasks.push((bucket, users.join(items), seed));
                }
            }
            squared += pool.install(|| {
                tasks
                    .into_par_iter()
                    .map(|(bucket, mut rows, seed)| {
                        if epoch == 1 || params.reshuffle {
                            shuffle(bucket, &mut Xoshiro256PlusPlus::seed_from_u64(seed));
                        }
                        run_epoch(kernel, bucket, &mut rows, &rates)
                    })
                    .sum::<f64>()
            });
        }
        on_epoch(&EpochReport {
            epoch,
            n_epochs: params.n_epochs,
            train_rmse: (squared / ratings.len() as f64).sqrt(),
            elapsed: started.elapsed(),
        });
    }
    Ok(())
}

/// Mutable views of the rows an epoch (or a block of one) updates.
struct Rows<'a> {
    /// Floats from one factor row to the next (rows are padded).
    stride: usize,
    mu: f32,
    user_bias: &'a mut [f32],
    user_factors: &'a mut [f32],
    item_bias: &'a mut [f32],
    item_factors: &'a mut [f32],
}

impl<'a> Rows<'a> {
    fn empty(stride: usize, mu: f32) -> Rows<'a> {
        Rows {
            stride,
            mu,
            user_bias: &mut [],
            user_factors: &mut [],
            item_bias: &mut [],
            item_factors: &mut [],
        }
    }

    /// Takes the user side of `self` and the item side of `items`.
    fn join(self, items: Rows<'a>) -> Rows<'a> {
        Rows {
            item_bias: items.user_bias,
            item_factors: items.user_factors,
            ..self
        }
    }
}

/// One pass of SGD over `order`, whose indices are relative to `rows`.
/// Returns the sum of squared errors met on the way.
fn run_epoch(kernel: Kernel, order: &[Rating], rows: &mut Rows<'_>, rates: &StepRates) -> f64 {
    match kernel {
        Kernel::Portable => epoch_loop::<0, _>(order, rows, rates, kernels::sgd_step),
        // SAFETY: `Kernel::detect` only returns this variant when the CPU has AVX2 and FMA.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => unsafe { run_epoch_avx2(order, rows, rates) },
        // SAFETY: `Kernel::detect` only returns this variant when the CPU has AVX-512F.
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe { run_epoch_avx512(order, rows, rates) },
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_epoch_avx2(order: &[Rating], rows: &mut Rows<'_>, rates: &StepRates) -> f64 {
    epoch_loop::<0, _>(order, rows, rates, |r, mu, row, rates| {
        kernels::avx2::sgd_step(r, mu, row, rates)
    })
}

/// The AVX-512 epoch, with the register-resident kernel instantiated for the
/// padded row length (up to 128 factors; longer rows use the general kernel).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn run_epoch_avx512(order: &[Rating], rows: &mut Rows<'_>, rates: &StepRates) -> f64 {
    use kernels::avx512::{sgd_step, sgd_step_fixed};
    macro_rules! fixed {
        ($n:literal) => {
            epoch_loop::<{ 16 * $n }, _>(order, rows, rates, |r, mu, row, rates| {
                sgd_step_fixed::<$n>(r, mu, row, rates)
            })
        };
    }
    // Padded strides are whole multiples of 16 (see `PaddedMatrix`).
    match rows.stride / 16 {
        1 => fixed!(1),
        2 => fixed!(2),
        3 => fixed!(3),
        4 => fixed!(4),
        5 => fixed!(5),
        6 => fixed!(6),
        7 => fixed!(7),
        8 => fixed!(8),
        _ => epoch_loop::<0, _>(order, rows, rates, |r, mu, row, rates| {
            sgd_step(r, mu, row, rates)
        }),
    }
}

/// How many ratings ahead the epoch loop prefetches factor rows: one step
/// is short, and waiting for its rows to come from L2 or L3 was a third of it.
const PREFETCH_DISTANCE: usize = 6;

/// The epoch loop shared by every kernel (inlined into each, so the SIMD
/// copies are compiled with their instruction sets enabled). `STRIDE` is the
/// row stride when known at compile time (it must then equal `rows.stride`),
/// or 0 to read it from `rows`.
#[inline(always)]
fn epoch_loop<const STRIDE: usize, S>(
    order: &[Rating],
    rows: &mut Rows<'_>,
    rates: &StepRates,
    step: S,
) -> f64
where
    S: Fn(f32, f32, StepRow<'_>, &StepRates) -> f32,
{
    debug_assert!(STRIDE == 0 || STRIDE == rows.stride);
    let stride = if STRIDE == 0 { rows.stride } else { STRIDE };
    let mu = rows.mu;
    let span = |index: u32| index as usize * stride..(index as usize + 1) * stride;
    let mut squared = 0.0f64;
    for (at, r) in order.iter().enumerate() {
        if let Some(ahead) = order.get(at + PREFETCH_DISTANCE) {
            prefetch(rows.user_factors.get(span(ahead.user)));
            prefetch(rows.item_factors.get(span(ahead.item)));
        }
        let row = StepRow {
            bu: &mut rows.user_bias[r.user as usize],
            bi: &mut rows.item_bias[r.item as usize],
            pu: &mut rows.user_factors[span(r.user)],
            qi: &mut rows.item_factors[span(r.item)],
        };
        let err = step(r.value, mu, row, rates);
        squared += f64::from(err * err);
    }
    squared
}

/// Asks the CPU to bring a row into L1 (a hint with no effect on results).
#[inline(always)]
fn prefetch(row: Option<&[f32]>) {
    #[cfg(target_arch = "x86_64")]
    if let Some(row) = row {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        for line in row.chunks(16) {
            // SAFETY: prefetching is a hint that never faults; the pointer is in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Cuts `0..counts.len()` into `blocks` contiguous ranges of about equal total
/// count. Returns the `blocks + 1` boundaries.
pub(crate) fn balanced_bounds(counts: &[u32], blocks: usize) -> Vec<usize> {
    let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
    let mut bounds = Vec::with_capacity(blocks + 1);
    bounds.push(0);
    let mut running = 0u64;
    for (at, &c) in counts.iter().enumerate() {
        let next_target = total * bounds.len() as u64 / blocks as u64;
        if bounds.len() < blocks && running >= next_target && at > *bounds.last().unwrap_or(&0) {
            bounds.push(at);
        }
        running += u64::from(c);
    }
    while bounds.len() < blocks {
        bounds.push(counts.len());
    }
    bounds.push(counts.len());
    bounds
}

/// Groups ratings into `b * b` buckets `(user block, item block)`, with
/// indices made relative to their blocks.
fn bucketize(ratings: &[Rating], user_bounds: &[usize], item_bounds: &[usize]) -> Vec<Vec<Rating>> {
    let b = user_bounds.len() - 1;
    let block_of = |bounds: &[usize], x: u32| bounds[1..].partition_point(|&end| end <= x as usize);
    let mut sizes = vec![0usize; b * b];
    for r in ratings {
        sizes[block_of(user_bounds, r.user) * b + block_of(item_bounds, r.item)] += 1;
    }
    let mut buckets: Vec<Vec<Rating>> = sizes.into_iter().map(Vec::with_capacity).collect();
    for r in ratings {
        let (ub, ib) = (block_of(user_bounds, r.user), block_of(item_bounds, r.item));
        buckets[ub * b + ib].push(Rating {
            user: r.user - user_bounds[ub] as u32,
            item: r.item - item_bounds[ib] as u32,
            value: r.value,
        });
    }
    buckets
}

/// Splits factor rows and biases at `bounds` into disjoint mutable views.
/// (The views are labelled as the user side; `Rows::join` relabels items.)
fn split_rows<'a>(
    factors: &'a mut [f32],
    bias: &'a mut [f32],
    bounds: &[usize],
    stride: usize,
    mu: f32,
) -> Vec<Rows<'a>> {
    let mut out = Vec::with_capacity(bounds.len() - 1);
    let (mut factors, mut bias) = (factors, bias);
    for w in bounds.windows(2) {
        let len = w[1] - w[0];
        let (f_head, f_rest) = std::mem::take(&mut factors).split_at_mut(len * stride);
        let (b_head, b_rest) = std::mem::take(&mut bias).split_at_mut(len);
        out.push(Rows {
            stride,
            mu,
            user_bias: b_head,
            user_factors: f_head,
            item_bias: &mut [],
            item_factors: &mut [],
        });
        factors = f_rest;
        bias = b_rest;
    }
    out
}

/// Fisher-Yates shuffle drawing each index with one 64x64->128-bit multiply
/// (Lemire's method without the rejection step: the bias is below n / 2^64).
/// The random positions are drawn a few swaps ahead and prefetched, since
/// waiting for them from memory was most of the cost of reshuffling every
/// epoch.
fn shuffle<T>(items: &mut [T], rng: &mut Xoshiro256PlusPlus) {
    const AHEAD: usize = 16;
    let n = items.len();
    if n < 2 {
        return;
    }
    let mut draw = |i: usize| ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
    // `ring[i % AHEAD]` holds the partner drawn for position i.
    let mut ring = [0usize; AHEAD];
    let first_ahead = n.saturating_sub(AHEAD).max(1);
    for i in (first_ahead..n).rev() {
        ring[i % AHEAD] = draw(i);
    }
    for i in (1..n).rev() {
        let j = ring[i % AHEAD];
        if i > AHEAD {
            let next = i - AHEAD;
            let partner = draw(next);
            ring[next % AHEAD] = partner;
            prefetch_item(items, partner);
        }
        items.swap(i, j);
    }
}

#[inline(always)]
fn prefetch_item<T>(items: &[T], at: usize) {
    #[cfg(target_arch = "x86_64")]
    if let Some(item) = items.get(at) {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: prefetching is a hint that never faults; the pointer is in bounds.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((item as *const T).cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (items, at);
}

fn mix_seed(seed: u64, epoch: usize, stratum: usize, thread: usize) -> u64 {
    let mut x = seed ^ ((epoch as u64) << 40) ^ ((stratum as u64) << 20) ^ thread as u64;
    // splitmix64 finaliser: nearby inputs give unrelated streams.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{SyntheticSpec, generate};

    fn quiet() -> impl FnMut(&EpochReport) {
        |_| {}
    }

    fn options(threads: usize) -> TrainOptions {
        TrainOptions {
            threads,
            scale: RatingScale::FIVE_STARS,
        }
    }

    fn small_data() -> crate::data::Dataset {
        generate(&SyntheticSpec {
            users: 300,
            items: 200,
            ratings: 12_000,
            seed: 7,
        })
    }

    fn rmse(model: &SvdModel, ratings: &[Rating]) -> f64 {
        let sq: f64 = ratings
            .iter()
            .map(|r| f64::from(model.predict(Some(r.user), Some(r.item)) - r.value).powi(2))
            .sum();
        (sq / ratings.len() as f64).sqrt()
    }

    #[test]
    fn training_is_reproducible_for_a_seed() {
        let data = small_data();
        let p = Hyperparams {
            n_epochs: 3,
            ..Hyperparams::with_seed(11)
        };
        let a = train(
            &data.ratings,
            data.users.len(),
            data.items.len(),
            &p,
            options(1),
            &mut quiet(),
        )
        .unwrap();
        let b = train(
            &data.ratings,
            data.users.len(),
            data.items.len(),
            &p,
            options(1),
            &mut quiet(),
        )
        .unwrap();
        assert_eq!(a, b);
        let c = train(
            &data.ratings,
            data.users.len(),
            data.items.len(),
            &Hyperparams { seed: 12, ..p },
            options(1),
            &mut quiet(),
        )
        .unwrap();
        assert_ne!(a, c);
    }

    #[test]
    fn training_error_falls_epoch_after_epoch() {
        let data = small_data();
        let mut rmses = Vec::new();
        let p = Hyperparams {
            n_epochs: 10,
            ..Hyperparams::default()
        };
        let model = train(
            &data.ratings,
            data.users.len(),
            data.items.len(),
            &p,
            options(1),
            &mut |r| rmses.push(r.train_rmse),
        )
        .unwrap();
        assert_eq!(rmses.len(), 10);
        assert!(rmses.windows(2).all(|w| w[1] < w[0]), "{rmses:?}");
        // The fitted model explains the training data better than the mean does.
        let mean_only = SvdModel {
            user_counts: vec![0; model.n_users()],
            ..model.clone()
        };
        assert!(rmse(&model, &data.ratings) < rmse(&mean_only, &data.ratings) - 0.05);
    }

    #[test]
    fn blocked_parallel_training_learns_as_well_and_is_deterministic() {
        let data = small_data();
        let p = Hyperparams {
            n_epochs: 10,
            ..Hyperparams::default()
        };
        let (nu, ni) = (data.users.len(), data.items.len());
        let seq = train(&data.ratings, nu, ni, &p, options(1), &mut quiet()).unwrap();
        let par = train(&data.ratings, nu, ni, &p, options(3), &mut quiet()).unwrap();
        let again = train(&data.ratings, nu, ni, &p, options(3), &mut quiet()).unwrap();
        assert_eq!(par, again);
        let (a, b) = (rmse(&seq, &data.ratings), rmse(&par, &data.ratings));
        assert!((a - b).abs() < 0.02, "sequential {a} vs blocked {b}");
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        let p = Hyperparams::default();
        let r = [Rating {
            user: 0,
            item: 5,
            value: 3.0,
        }];
        assert_eq!(
            train(&[], 1, 1, &p, options(1), &mut quiet()).unwrap_err(),
            TrainError::NoRatings
        );
        assert!(matches!(
            train(&r, 1, 2, &p, options(1), &mut quiet()).unwrap_err(),
            TrainError::OutOfRange {
                index: 0,
                item: 5,
                ..
            }
        ));
        assert_eq!(
            train(&r, 1, 6, &p, options(0), &mut quiet()).unwrap_err(),
            TrainError::NoThreads
        );
    }

    #[test]
    fn ratings_outside_the_scale_are_refused_naming_the_rating() {
        let data = small_data();
        let (nu, ni) = (data.users.len(), data.items.len());
        let p = Hyperparams {
            n_epochs: 1,
            ..Hyperparams::default()
        };
        for value in [1e6, 0.0, 5.5, f32::NAN, f32::INFINITY] {
            let mut ratings = data.ratings.clone();
            ratings[17].value = value;
            for threads in [1, 2] {
                let err = train(&ratings, nu, ni, &p, options(threads), &mut quiet())
                    .map(|_| ())
                    .unwrap_err();
                let message = err.to_string();
                assert!(
                    message.contains(&format!("rating {value} ")),
                    "{value}: {message}"
                );
                assert!(message.contains("rating scale 1..=5"), "{message}");
                assert!(message.contains("#18"), "{message}");
            }
        }
    }

    #[test]
    fn a_training_run_that_diverges_is_an_error_not_a_nan_model() {
        let data = small_data();
        let (nu, ni) = (data.users.len(), data.items.len());
        let p = Hyperparams {
            n_epochs: 3,
            ..Hyperparams::default()
        };
        // One huge rating within a scale that allows it.
        let mut ratings = data.ratings.clone();
        ratings[17].value = 1e30;
        let wide = TrainOptions {
            threads: 1,
            scale: RatingScale {
                min: 1.0,
                max: 1e30,
            },
        };
        // A learning rate far too high for sane ratings.
        let hot = Hyperparams {
            lr_pu: 50.0,
            lr_qi: 50.0,
            ..p.clone()
        };
        let runs = [
            (&ratings, &p, wide),
            (&ratings, &p, TrainOptions { threads: 2, ..wide }),
            (&data.ratings, &hot, options(1)),
            (&data.ratings, &hot, options(2)),
        ];
        for (ratings, params, opts) in runs {
            let result = train(ratings, nu, ni, params, opts, &mut quiet());
            let message = match result {
                Ok(model) => panic!(
                    "trained a model with a NaN: {}",
                    model.user_factors.iter().any(|x| !x.is_finite())
                ),
                Err(e) => e.to_string(),
            };
            assert!(
                message.starts_with("training diverged: ")
                    && message.contains(" non-finite parameters")
                    && message.contains("lower the learning rate"),
                "{message}"
            );
        }
    }

    #[test]
    fn shuffle_is_a_permutation_and_moves_things() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut items: Vec<u32> = (0..1000).collect();
        shuffle(&mut items, &mut rng);
        assert_ne!(items, (0..1000).collect::<Vec<_>>());
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
        // Every position is reachable: over many shuffles of 4 items, each lands everywhere.
        let mut seen = [[false; 4]; 4];
        for _ in 0..200 {
            let mut small = [0usize, 1, 2, 3];
            shuffle(&mut small, &mut rng);
            for (pos, &v) in small.iter().enumerate() {
                seen[v][pos] = true;
            }
        }
        assert!(seen.iter().flatten().all(|&s| s));
    }

    #[test]
    fn balanced_bounds_split_by_rating_count() {
        assert_eq!(balanced_bounds(&[1, 1, 1, 1], 2), vec![0, 2, 4]);
        assert_eq!(balanced_bounds(&[10, 1, 1, 1, 1, 1], 2), vec![0, 1, 6]);
        assert_eq!(balanced_bounds(&[5], 3), vec![0, 1, 1, 1]);
        let bounds = balanced_bounds(&[3; 100], 4);
        assert_eq!(bounds, vec![0, 25, 50, 75, 100]);
    }

    #[test]
    fn buckets_partition_every_rating_exactly_once() {
        let data = small_data();
        let ub = balanced_bounds(&vec![1; data.users.len()], 3);
        let ib = balanced_bounds(&vec![1; data.items.len()], 3);
        let buckets = bucketize(&data.ratings, &ub, &ib);
        assert_eq!(buckets.iter().map(Vec::len).sum::<usize>(), data.len());
        for (at, bucket) in buckets.iter().enumerate() {
            let (u, i) = (at / 3, at % 3);
            assert!(
                bucket.iter().all(|r| (r.user as usize) < ub[u + 1] - ub[u]
                    && (r.item as usize) < ib[i + 1] - ib[i])
            );
        }
    }
}
