//! Hyper-parameters of biased matrix factorisation, with scikit-surprise's defaults.
//!
//! The names and defaults follow `surprise.SVD` one for one (`n_factors=100`,
//! `n_epochs=20`, `lr_all=0.005`, `reg_all=0.02`, `init_std_dev=0.1`), so a
//! surprise user can carry a tuned configuration over unchanged. They are
//! stored in every model file, which makes a model self-describing.

use serde::{Deserialize, Serialize};

/// Everything that shapes SGD training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hyperparams {
    /// Number of latent factors.
    pub n_factors: usize,
    /// Passes over the training ratings.
    pub n_epochs: usize,
    /// Learn user and item biases (surprise's `biased`); without them the
    /// estimate is the bare dot product.
    pub biased: bool,
    /// Mean of the normal distribution factors start from.
    pub init_mean: f32,
    /// Standard deviation of that distribution.
    pub init_std_dev: f32,
    /// Learning rate of the user biases.
    pub lr_bu: f32,
    /// Learning rate of the item biases.
    pub lr_bi: f32,
    /// Learning rate of the user factors.
    pub lr_pu: f32,
    /// Learning rate of the item factors.
    pub lr_qi: f32,
    /// Regularisation of the user biases.
    pub reg_bu: f32,
    /// Regularisation of the item biases.
    pub reg_bi: f32,
    /// Regularisation of the user factors.
    pub reg_pu: f32,
    /// Regularisation of the item factors.
    pub reg_qi: f32,
    /// Seed of the random initialisation and shuffling; the same seed, data
    /// and thread count give the same model.
    pub seed: u64,
    /// Draw a new visiting order every epoch instead of once before the
    /// first. Once is the default: it is what most of the cost of an epoch is
    /// not, and 5-fold RMSE on ML-100K is the same either way (see BENCHMARKS.md).
    #[serde(default)]
    pub reshuffle: bool,
}

impl Hyperparams {
    /// surprise's defaults with the given seed.
    pub fn with_seed(seed: u64) -> Self {
        Self::with_rates(seed, 0.005, 0.02)
    }

    /// Defaults, with every learning rate set to `lr_all` and every
    /// regularisation term to `reg_all` (surprise's two shorthands).
    pub fn with_rates(seed: u64, lr_all: f32, reg_all: f32) -> Self {
        Hyperparams {
            n_factors: 100,
            n_epochs: 20,
            biased: true,
            init_mean: 0.0,
            init_std_dev: 0.1,
            lr_bu: lr_all,
            lr_bi: lr_all,
            lr_pu: lr_all,
            lr_qi: lr_all,
            reg_bu: reg_all,
            reg_bi: reg_all,
            reg_pu: reg_all,
            reg_qi: reg_all,
            seed,
            reshuffle: false,
        }
    }

    /// Checks that the values can train a model.
    pub fn validate(&self) -> Result<(), String> {
        if self.n_factors == 0 {
            return Err("n_factors must be at least 1".into());
        }
        let rates = [
            ("lr_bu", self.lr_bu),
            ("lr_bi", self.lr_bi),
            ("lr_pu", self.lr_pu),
            ("lr_qi", self.lr_qi),
            ("reg_bu", self.reg_bu),
            ("reg_bi", self.reg_bi),
            ("reg_pu", self.reg_pu),
            ("reg_qi", self.reg_qi),
        ];
        for (name, value) in rates {
            if !value.is_finite() || value < 0.0 {
                return Err(format!(
                    "{name} must be a finite non-negative number, got {value}"
                ));
            }
        }
        if !self.init_mean.is_finite() || !self.init_std_dev.is_finite() || self.init_std_dev < 0.0
        {
            return Err("init_mean must be finite and init_std_dev finite and non-negative".into());
        }
        Ok(())
    }
}

impl Default for Hyperparams {
    fn default() -> Self {
        Self::with_seed(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_surprise() {
        let p = Hyperparams::default();
        assert_eq!((p.n_factors, p.n_epochs, p.biased), (100, 20, true));
        assert_eq!((p.lr_pu, p.reg_qi, p.init_std_dev), (0.005, 0.02, 0.1));
        assert!(p.validate().is_ok());
    }

    #[test]
    fn rejects_unusable_values() {
        let mut p = Hyperparams {
            n_factors: 0,
            ..Hyperparams::default()
        };
        assert!(p.validate().is_err());
        p.n_factors = 10;
        p.lr_qi = f32::NAN;
        assert_eq!(
            p.validate().unwrap_err(),
            "lr_qi must be a finite non-negative number, got NaN"
        );
    }
}
