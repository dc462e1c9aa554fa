//! Biased matrix factorisation learned by SGD: scikit-surprise's `SVD`, in Rust.
//!
//! The estimate of user `u`'s rating of item `i` is
//! `mu + b_u + b_i + q_i · p_u`, clipped to the rating scale. [`params`] holds
//! the hyper-parameters with surprise's defaults, [`kernels`] the SGD step
//! that dominates training time, [`model`] the learned arrays and the
//! estimate, and [`train`](mod@train) the sequential and block-parallel epoch loops.

pub mod kernels;
pub mod model;
mod padded;
pub mod params;
pub mod train;

pub use model::SvdModel;
pub use params::Hyperparams;
pub use train::{EpochReport, TrainError, TrainOptions, train};
