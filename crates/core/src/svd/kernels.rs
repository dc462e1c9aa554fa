//! The SGD kernel: one dot product and one update per rating.
//!
//! This is where training time goes (ML-100K runs it two million times). The
//! portable version is plain Rust; on x86-64 the [`avx2`] and [`avx512`]
//! twins (chosen at run time) do the same arithmetic on 8 or 16 floats per
//! instruction with fused multiply-adds, which a portable build would not
//! emit. Training pads factor rows to whole 64-byte lines, and for those rows
//! [`avx512::sgd_step_fixed`] keeps both rows in registers between the dot
//! product and the update, so each rating costs one load and one store per
//! cache line of factors. All compute the factor update as
//! `p' = p (1 - lr reg) + (lr err) q`, algebraically surprise's
//! `p + lr (err q - reg p)` with one operation fewer per factor.

/// Learning rates and regularisation terms of one SGD step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRates {
    /// Learning rate of the user bias.
    pub lr_bu: f32,
    /// Learning rate of the item bias.
    pub lr_bi: f32,
    /// Learning rate of the user factors.
    pub lr_pu: f32,
    /// Learning rate of the item factors.
    pub lr_qi: f32,
    /// Regularisation of the user bias.
    pub reg_bu: f32,
    /// Regularisation of the item bias.
    pub reg_bi: f32,
    /// Regularisation of the user factors.
    pub reg_pu: f32,
    /// Regularisation of the item factors.
    pub reg_qi: f32,
}

impl From<&super::Hyperparams> for StepRates {
    fn from(p: &super::Hyperparams) -> Self {
        // Without biases surprise never touches them: a zero rate keeps them at 0.
        let bias_rate = |lr: f32| if p.biased { lr } else { 0.0 };
        StepRates {
            lr_bu: bias_rate(p.lr_bu),
            lr_bi: bias_rate(p.lr_bi),
            lr_pu: p.lr_pu,
            lr_qi: p.lr_qi,
            reg_bu: p.reg_bu,
            reg_bi: p.reg_bi,
            reg_pu: p.reg_pu,
            reg_qi: p.reg_qi,
        }
    }
}

/// The parameters one rating updates: its user's bias and factor row, its item's.
#[derive(Debug)]
pub struct StepRow<'a> {
    /// User bias `b_u`.
    pub bu: &'a mut f32,
    /// Item bias `b_i`.
    pub bi: &'a mut f32,
    /// User factors `p_u`.
    pub pu: &'a mut [f32],
    /// Item factors `q_i` (same length as `pu`).
    pub qi: &'a mut [f32],
}

/// Which implementation this CPU runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl Kernel {
    /// The widest kernel the CPU supports. Only this constructor may produce
    /// the SIMD variants, which is what makes calling them sound.
    pub(crate) fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if avx512_available() {
                return Kernel::Avx512;
            }
            if avx2_available() {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// True when this CPU can run the [`avx2`] kernels.
pub fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when this CPU can run the [`avx512`] kernels.
pub fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The kernel training uses on this CPU, for benchmark reports.
pub fn kernel_name() -> &'static str {
    match Kernel::detect() {
        Kernel::Portable => "portable",
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 => "avx2+fma",
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => "avx512",
    }
}

/// Error, bias updates and factor update of one rating, given the kernel's
/// dot product and row update.
#[inline(always)]
fn step_with(
    dot: impl Fn(&[f32], &[f32]) -> f32,
    update: impl Fn(&mut [f32], &mut [f32], f32, &StepRates),
    rating: f32,
    mu: f32,
    row: StepRow<'_>,
    rates: &StepRates,
) -> f32 {
    let err = rating - (mu + *row.bu + *row.bi + dot(row.qi, row.pu));
    update_biases(row.bu, row.bi, err, rates);
    update(row.pu, row.qi, err, rates);
    err
}

#[inline(always)]
fn update_biases(bu: &mut f32, bi: &mut f32, err: f32, rates: &StepRates) {
    *bu += rates.lr_bu * (err - rates.reg_bu * *bu);
    *bi += rates.lr_bi * (err - rates.reg_bi * *bi);
}

const LANES: usize = 8;

/// Dot product of two equally long vectors.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for k in 0..LANES {
            acc[k] += x[k] * y[k];
        }
    }
    let mut tail = 0.0;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    let quad = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (quad[0] + quad[2]) + (quad[1] + quad[3]) + tail
}

#[inline(always)]
fn update(pu: &mut [f32], qi: &mut [f32], err: f32, rates: &StepRates) {
    let (keep_p, keep_q) = (
        1.0 - rates.lr_pu * rates.reg_pu,
        1.0 - rates.lr_qi * rates.reg_qi,
    );
    let (step_p, step_q) = (rates.lr_pu * err, rates.lr_qi * err);
    for (p, q) in pu.iter_mut().zip(qi.iter_mut()) {
        let (pf, qf) = (*p, *q);
        *p = pf * keep_p + step_p * qf;
        *q = qf * keep_q + step_q * pf;
    }
}

/// One stochastic gradient step of surprise's SVD on a single rating.
///
/// Computes the error of the current estimate `mu + bu + bi + qi·pu`, then
/// moves the biases and both factor rows against the regularised gradient,
/// using the *old* value of each factor in the other's update (as surprise
/// does). Returns the error before the step, for the epoch's training RMSE.
#[inline(always)]
pub fn sgd_step(rating: f32, mu: f32, row: StepRow<'_>, rates: &StepRates) -> f32 {
    step_with(dot, update, rating, mu, row, rates)
}

/// AVX2 + FMA versions of the kernels (8 floats per register).
///
/// Every function here may only be called on a CPU for which
/// [`avx2_available`] is true.
#[cfg(target_arch = "x86_64")]
pub mod avx2 {
    use std::arch::x86_64::*;

    use super::{StepRates, StepRow};

    /// Lane masks for the last, partial group of 1 to 7 floats.
    const TAIL_MASKS: [[i32; 8]; 8] = {
        let mut masks = [[0i32; 8]; 8];
        let mut n = 0;
        while n < 8 {
            let mut lane = 0;
            while lane < n {
                masks[n][lane] = -1;
                lane += 1;
            }
            n += 1;
        }
        masks
    };

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn tail_mask(remaining: usize) -> __m256i {
        // SAFETY: TAIL_MASKS[n] is 8 contiguous i32s; `remaining & 7` indexes within the table.
        unsafe { _mm256_loadu_si256(TAIL_MASKS[remaining & 7].as_ptr().cast()) }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
    }

    /// Dot product of two equally long vectors.
    ///
    /// # Safety
    /// Callable only on a CPU with AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let k = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        // SAFETY: full loads read offsets i..i+8 <= k; the masked load reads
        // only the `k - i` lanes that are in bounds.
        unsafe {
            while i + 16 <= k {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm256_fmadd_ps(
                    _mm256_loadu_ps(pa.add(i + 8)),
                    _mm256_loadu_ps(pb.add(i + 8)),
                    acc1,
                );
                i += 16;
            }
            if i + 8 <= k {
                acc0 =
                    _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
                i += 8;
            }
            if i < k {
                let mask = tail_mask(k - i);
                acc1 = _mm256_fmadd_ps(
                    _mm256_maskload_ps(pa.add(i), mask),
                    _mm256_maskload_ps(pb.add(i), mask),
                    acc1,
                );
            }
        }
        horizontal_sum(_mm256_add_ps(acc0, acc1))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn update(pu: &mut [f32], qi: &mut [f32], err: f32, rates: &StepRates) {
        let k = pu.len().min(qi.len());
        let (pp, qp) = (pu.as_mut_ptr(), qi.as_mut_ptr());
        let keep_p = _mm256_set1_ps(1.0 - rates.lr_pu * rates.reg_pu);
        let keep_q = _mm256_set1_ps(1.0 - rates.lr_qi * rates.reg_qi);
        let (step_p, step_q) = (
            _mm256_set1_ps(rates.lr_pu * err),
            _mm256_set1_ps(rates.lr_qi * err),
        );
        let mut i = 0;
        // SAFETY: loads and stores touch offsets i..i+8 <= k of both rows, or
        // with a mask only the in-bounds lanes of the last group; the rows are
        // distinct slices (one from the user matrix, one from the item matrix).
        unsafe {
            while i + 8 <= k {
                let p = _mm256_loadu_ps(pp.add(i));
                let q = _mm256_loadu_ps(qp.add(i));
                _mm256_storeu_ps(
                    pp.add(i),
                    _mm256_fmadd_ps(step_p, q, _mm256_mul_ps(p, keep_p)),
                );
                _mm256_storeu_ps(
                    qp.add(i),
                    _mm256_fmadd_ps(step_q, p, _mm256_mul_ps(q, keep_q)),
                );
                i += 8;
            }
            if i < k {
                let mask = tail_mask(k - i);
                let p = _mm256_maskload_ps(pp.add(i), mask);
                let q = _mm256_maskload_ps(qp.add(i), mask);
                _mm256_maskstore_ps(
                    pp.add(i),
                    mask,
                    _mm256_fmadd_ps(step_p, q, _mm256_mul_ps(p, keep_p)),
                );
                _mm256_maskstore_ps(
                    qp.add(i),
                    mask,
                    _mm256_fmadd_ps(step_q, p, _mm256_mul_ps(q, keep_q)),
                );
            }
        }
    }

    /// [`super::sgd_step`] on AVX2 registers.
    ///
    /// # Safety
    /// Callable only on a CPU with AVX2 and FMA.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub fn sgd_step(rating: f32, mu: f32, row: StepRow<'_>, rates: &StepRates) -> f32 {
        super::step_with(
            |a, b| dot(a, b),
            |p, q, e, r| update(p, q, e, r),
            rating,
            mu,
            row,
            rates,
        )
    }
}

/// AVX-512 versions of the kernels (16 floats per register, native lane masks).
///
/// Every function here may only be called on a CPU for which
/// [`avx512_available`] is true.
#[cfg(target_arch = "x86_64")]
pub mod avx512 {
    use std::arch::x86_64::*;

    use super::{StepRates, StepRow};

    /// Mask selecting the first `n` (< 16) lanes.
    #[inline]
    fn tail_mask(n: usize) -> __mmask16 {
        ((1u32 << (n & 15)) - 1) as __mmask16
    }

    /// Dot product of two equally long vectors.
    ///
    /// # Safety
    /// Callable only on a CPU with AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        let k = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        // SAFETY: full loads read offsets i..i+16 <= k; the masked loads read
        // only the `k - i` in-bounds lanes.
        unsafe {
            while i + 32 <= k {
                acc0 =
                    _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
                acc1 = _mm512_fmadd_ps(
                    _mm512_loadu_ps(pa.add(i + 16)),
                    _mm512_loadu_ps(pb.add(i + 16)),
                    acc1,
                );
                i += 32;
            }
            if i + 16 <= k {
                acc0 =
                    _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
                i += 16;
            }
            if i < k {
                let mask = tail_mask(k - i);
                acc1 = _mm512_fmadd_ps(
                    _mm512_maskz_loadu_ps(mask, pa.add(i)),
                    _mm512_maskz_loadu_ps(mask, pb.add(i)),
                    acc1,
                );
            }
        }
        _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn update(pu: &mut [f32], qi: &mut [f32], err: f32, rates: &StepRates) {
        let k = pu.len().min(qi.len());
        let (pp, qp) = (pu.as_mut_ptr(), qi.as_mut_ptr());
        let keep_p = _mm512_set1_ps(1.0 - rates.lr_pu * rates.reg_pu);
        let keep_q = _mm512_set1_ps(1.0 - rates.lr_qi * rates.reg_qi);
        let (step_p, step_q) = (
            _mm512_set1_ps(rates.lr_pu * err),
            _mm512_set1_ps(rates.lr_qi * err),
        );
        let mut i = 0;
        // SAFETY: full loads and stores touch offsets i..i+16 <= k of both
        // rows, masked ones only the in-bounds lanes; the rows are distinct
        // slices (one from the user matrix, one from the item matrix).
        unsafe {
            while i + 16 <= k {
                let p = _mm512_loadu_ps(pp.add(i));
                let q = _mm512_loadu_ps(qp.add(i));
                _mm512_storeu_ps(
                    pp.add(i),
                    _mm512_fmadd_ps(step_p, q, _mm512_mul_ps(p, keep_p)),
                );
                _mm512_storeu_ps(
                    qp.add(i),
                    _mm512_fmadd_ps(step_q, p, _mm512_mul_ps(q, keep_q)),
                );
                i += 16;
            }
            if i < k {
                let mask = tail_mask(k - i);
                let p = _mm512_maskz_loadu_ps(mask, pp.add(i));
                let q = _mm512_maskz_loadu_ps(mask, qp.add(i));
                _mm512_mask_storeu_ps(
                    pp.add(i),
                    mask,
                    _mm512_fmadd_ps(step_p, q, _mm512_mul_ps(p, keep_p)),
                );
                _mm512_mask_storeu_ps(
                    qp.add(i),
                    mask,
                    _mm512_fmadd_ps(step_q, p, _mm512_mul_ps(q, keep_q)),
                );
            }
        }
    }

    /// [`super::sgd_step`] on AVX-512 registers.
    ///
    /// # Safety
    /// Callable only on a CPU with AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn sgd_step(rating: f32, mu: f32, row: StepRow<'_>, rates: &StepRates) -> f32 {
        super::step_with(
            |a, b| dot(a, b),
            |p, q, e, r| update(p, q, e, r),
            rating,
            mu,
            row,
            rates,
        )
    }

    /// [`super::sgd_step`] for rows of exactly `16 * N` floats (padded),
    /// holding both rows in registers from the dot product to the update.
    /// Rows of any other length fall back to [`sgd_step`].
    ///
    /// # Safety
    /// Callable only on a CPU with AVX-512F.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn sgd_step_fixed<const N: usize>(
        rating: f32,
        mu: f32,
        row: StepRow<'_>,
        rates: &StepRates,
    ) -> f32 {
        if row.pu.len() != 16 * N || row.qi.len() != 16 * N {
            return sgd_step(rating, mu, row, rates);
        }
        let (pp, qp) = (row.pu.as_mut_ptr(), row.qi.as_mut_ptr());
        let mut p = [_mm512_setzero_ps(); N];
        let mut q = [_mm512_setzero_ps(); N];
        let (mut acc0, mut acc1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        // SAFETY: both rows hold at least 16 * N floats (checked above), so
        // every load reads in bounds.
        unsafe {
            for j in 0..N {
                p[j] = _mm512_loadu_ps(pp.add(16 * j));
                q[j] = _mm512_loadu_ps(qp.add(16 * j));
                if j % 2 == 0 {
                    acc0 = _mm512_fmadd_ps(p[j], q[j], acc0);
                } else {
                    acc1 = _mm512_fmadd_ps(p[j], q[j], acc1);
                }
            }
        }
        let err =
            rating - (mu + *row.bu + *row.bi + _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)));
        super::update_biases(row.bu, row.bi, err, rates);
        let keep_p = _mm512_set1_ps(1.0 - rates.lr_pu * rates.reg_pu);
        let keep_q = _mm512_set1_ps(1.0 - rates.lr_qi * rates.reg_qi);
        let (step_p, step_q) = (
            _mm512_set1_ps(rates.lr_pu * err),
            _mm512_set1_ps(rates.lr_qi * err),
        );
        // SAFETY: as above, every store writes in bounds of its row; the rows
        // are distinct slices.
        unsafe {
            for j in 0..N {
                _mm512_storeu_ps(
                    pp.add(16 * j),
                    _mm512_fmadd_ps(step_p, q[j], _mm512_mul_ps(p[j], keep_p)),
                );
                _mm512_storeu_ps(
                    qp.add(16 * j),
                    _mm512_fmadd_ps(step_q, p[j], _mm512_mul_ps(q[j], keep_q)),
                );
            }
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rates(lr: f32, reg: f32) -> StepRates {
        StepRates {
            lr_bu: lr,
            lr_bi: lr,
            lr_pu: lr,
            lr_qi: lr,
            reg_bu: reg,
            reg_bi: reg,
            reg_pu: reg,
            reg_qi: reg,
        }
    }

    /// Owned parameters of one step, for building `StepRow`s.
    #[derive(Clone, Debug, PartialEq)]
    struct Params {
        bu: f32,
        bi: f32,
        pu: Vec<f32>,
        qi: Vec<f32>,
    }

    impl Params {
        fn new(k: usize, seed: usize) -> Self {
            Params {
                bu: 0.1,
                bi: -0.2,
                pu: (0..k)
                    .map(|i| (((i + seed) * 37 % 11) as f32 - 5.0) / 20.0)
                    .collect(),
                qi: (0..k)
                    .map(|i| (((i + seed) * 53 % 13) as f32 - 6.0) / 25.0)
                    .collect(),
            }
        }
        fn row(&mut self) -> StepRow<'_> {
            StepRow {
                bu: &mut self.bu,
                bi: &mut self.bi,
                pu: &mut self.pu,
                qi: &mut self.qi,
            }
        }
        fn close_to(&self, other: &Params) -> bool {
            let near = |a: f32, b: f32| (a - b).abs() < 1e-5;
            near(self.bu, other.bu)
                && near(self.bi, other.bi)
                && self
                    .pu
                    .iter()
                    .zip(&other.pu)
                    .chain(self.qi.iter().zip(&other.qi))
                    .all(|(a, b)| near(*a, *b))
        }
    }

    #[test]
    fn sgd_step_matches_a_hand_worked_example() {
        // mu=3.5, bu=0.1, bi=-0.2, pu=(0.5, -1.0), qi=(0.2, 0.4), r=4, lr=0.1, reg=0.5.
        // estimate = 3.5 + 0.1 - 0.2 + (0.1 - 0.4) = 3.1, err = 0.9
        // bu' = 0.1 + 0.1 * (0.9 - 0.5 * 0.1)    = 0.185
        // bi' = -0.2 + 0.1 * (0.9 + 0.5 * 0.2)   = -0.1
        // pu' = 0.5 + 0.1 * (0.9*0.2 - 0.25)     = 0.493
        //       -1.0 + 0.1 * (0.9*0.4 + 0.5)     = -0.914
        // qi' = 0.2 + 0.1 * (0.9*0.5 - 0.1)      = 0.235
        //       0.4 + 0.1 * (0.9*-1.0 - 0.2)     = 0.29
        let mut p = Params {
            bu: 0.1,
            bi: -0.2,
            pu: vec![0.5, -1.0],
            qi: vec![0.2, 0.4],
        };
        let err = sgd_step(4.0, 3.5, p.row(), &rates(0.1, 0.5));
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(err, 0.9), "err {err}");
        assert!(
            close(p.bu, 0.185) && close(p.bi, -0.1),
            "biases {} {}",
            p.bu,
            p.bi
        );
        assert!(
            close(p.pu[0], 0.493) && close(p.pu[1], -0.914),
            "pu {:?}",
            p.pu
        );
        assert!(
            close(p.qi[0], 0.235) && close(p.qi[1], 0.29),
            "qi {:?}",
            p.qi
        );
    }

    #[test]
    fn zero_bias_rates_leave_biases_untouched() {
        let mut p = Params {
            bu: 0.0,
            bi: 0.0,
            pu: vec![1.0],
            qi: vec![1.0],
        };
        let mut r = rates(0.1, 0.0);
        r.lr_bu = 0.0;
        r.lr_bi = 0.0;
        sgd_step(5.0, 0.0, p.row(), &r);
        assert_eq!((p.bu, p.bi), (0.0, 0.0));
    }

    type Step = fn(f32, f32, StepRow<'_>, &StepRates) -> f32;

    /// Every kernel this CPU runs.
    fn kernels_here() -> Vec<(&'static str, Step)> {
        let mut all: Vec<(&'static str, Step)> = vec![("portable", sgd_step)];
        #[cfg(target_arch = "x86_64")]
        {
            if avx2_available() {
                // SAFETY: AVX2 and FMA are available (checked).
                all.push(("avx2", |r, m, row, x| unsafe {
                    avx2::sgd_step(r, m, row, x)
                }));
            }
            if avx512_available() {
                // SAFETY: AVX-512F is available (checked).
                all.push(("avx512", |r, m, row, x| unsafe {
                    avx512::sgd_step(r, m, row, x)
                }));
                // SAFETY: as above; rows shorter than 112 take the fallback.
                all.push(("avx512 fixed 7", |r, m, row, x| unsafe {
                    avx512::sgd_step_fixed::<7>(r, m, row, x)
                }));
                // SAFETY: as above.
                all.push(("avx512 fixed 1", |r, m, row, x| unsafe {
                    avx512::sgd_step_fixed::<1>(r, m, row, x)
                }));
            } else {
                eprintln!("note: this CPU has no AVX-512; those kernels are not tested here");
            }
        }
        all
    }

    #[test]
    fn every_kernel_matches_the_portable_step() {
        for (name, step) in kernels_here() {
            for k in [1usize, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 112, 131] {
                let r = rates(0.05, 0.1);
                let mut reference = Params::new(k, 1);
                let expected = sgd_step(4.0, 3.5, reference.row(), &r);
                let mut p = Params::new(k, 1);
                let err = step(4.0, 3.5, p.row(), &r);
                assert!(
                    (err - expected).abs() < 1e-5 && p.close_to(&reference),
                    "{name}, k={k}"
                );
            }
        }
    }

    fn naive_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    proptest! {
        #[test]
        fn every_dot_matches_a_naive_sum(pairs in proptest::collection::vec((-2.0f32..2.0, -2.0f32..2.0), 0..300)) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let slow = naive_dot(&a, &b);
            let mut results = vec![("portable", f64::from(dot(&a, &b)))];
            #[cfg(target_arch = "x86_64")]
            {
                if avx2_available() {
                    // SAFETY: checked.
                    results.push(("avx2", f64::from(unsafe { avx2::dot(&a, &b) })));
                }
                if avx512_available() {
                    // SAFETY: checked.
                    results.push(("avx512", f64::from(unsafe { avx512::dot(&a, &b) })));
                }
            }
            for (name, fast) in results {
                prop_assert!((fast - slow).abs() <= 1e-4 * (1.0 + slow.abs()), "{}: {} vs {}", name, fast, slow);
            }
        }

        #[test]
        fn a_step_reduces_the_error_on_that_rating(
            r in 1.0f32..5.0,
            pu in proptest::collection::vec(-0.3f32..0.3, 16),
            qi in proptest::collection::vec(-0.3f32..0.3, 16),
        ) {
            let mut p = Params { bu: 0.0, bi: 0.0, pu, qi };
            let before = sgd_step(r, 3.0, p.row(), &rates(0.01, 0.0));
            let after = r - (3.0 + p.bu + p.bi + dot(&p.pu, &p.qi));
            prop_assert!(after.abs() <= before.abs() + 1e-6);
        }
    }
}
