//! The SGD kernel: one dot product and one update per rating.
//!
//! This is where training time goes (ML-100K runs it two million times), so it
//! is written to vectorise: eight independent accumulators let the compiler
//! keep a whole SIMD register busy without reassociating floating-point sums
//! on its own, and the update walks both factor rows in lock step. The
//! functions are `#[inline(always)]` so that the epoch loops, compiled once
//! per CPU feature level by `multiversion`, get a copy using the widest
//! instructions the machine has.

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

/// One stochastic gradient step of surprise's SVD on a single rating.
///
/// Computes the error of the current estimate `mu + bu + bi + qi·pu`, then
/// moves the biases and both factor rows against the regularised gradient,
/// using the *old* value of each factor in the other's update (as surprise
/// does). Returns the error before the step, for the epoch's training RMSE.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn sgd_step(
    rating: f32,
    mu: f32,
    bu: &mut f32,
    bi: &mut f32,
    pu: &mut [f32],
    qi: &mut [f32],
    rates: &StepRates,
) -> f32 {
    let err = rating - (mu + *bu + *bi + dot(qi, pu));
    *bu += rates.lr_bu * (err - rates.reg_bu * *bu);
    *bi += rates.lr_bi * (err - rates.reg_bi * *bi);
    let (lr_pu, lr_qi, reg_pu, reg_qi) = (rates.lr_pu, rates.lr_qi, rates.reg_pu, rates.reg_qi);
    for (p, q) in pu.iter_mut().zip(qi.iter_mut()) {
        let (pf, qf) = (*p, *q);
        *p = pf + lr_pu * (err * qf - reg_pu * pf);
        *q = qf + lr_qi * (err * pf - reg_qi * qf);
    }
    err
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
        let (mut bu, mut bi) = (0.1, -0.2);
        let mut pu = [0.5, -1.0];
        let mut qi = [0.2, 0.4];
        let err = sgd_step(
            4.0,
            3.5,
            &mut bu,
            &mut bi,
            &mut pu,
            &mut qi,
            &rates(0.1, 0.5),
        );
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(err, 0.9), "err {err}");
        assert!(close(bu, 0.185) && close(bi, -0.1), "biases {bu} {bi}");
        assert!(close(pu[0], 0.493) && close(pu[1], -0.914), "pu {pu:?}");
        assert!(close(qi[0], 0.235) && close(qi[1], 0.29), "qi {qi:?}");
    }

    #[test]
    fn zero_bias_rates_leave_biases_untouched() {
        let (mut bu, mut bi) = (0.0, 0.0);
        let mut r = rates(0.1, 0.0);
        r.lr_bu = 0.0;
        r.lr_bi = 0.0;
        sgd_step(5.0, 0.0, &mut bu, &mut bi, &mut [1.0], &mut [1.0], &r);
        assert_eq!((bu, bi), (0.0, 0.0));
    }

    fn naive_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    proptest! {
        #[test]
        fn dot_matches_a_naive_sum(pairs in proptest::collection::vec((-2.0f32..2.0, -2.0f32..2.0), 0..300)) {
            let (a, b): (Vec<f32>, Vec<f32>) = pairs.into_iter().unzip();
            let fast = f64::from(dot(&a, &b));
            let slow = naive_dot(&a, &b);
            prop_assert!((fast - slow).abs() <= 1e-4 * (1.0 + slow.abs()), "{} vs {}", fast, slow);
        }

        #[test]
        fn a_step_reduces_the_error_on_that_rating(
            r in 1.0f32..5.0,
            pu in proptest::collection::vec(-0.3f32..0.3, 16),
            qi in proptest::collection::vec(-0.3f32..0.3, 16),
        ) {
            let (mut pu, mut qi) = (pu, qi);
            let (mut bu, mut bi) = (0.0, 0.0);
            let rates = rates(0.01, 0.0);
            let before = sgd_step(r, 3.0, &mut bu, &mut bi, &mut pu, &mut qi, &rates);
            let after = r - (3.0 + bu + bi + dot(&pu, &qi));
            prop_assert!(after.abs() <= before.abs() + 1e-6);
        }
    }
}
