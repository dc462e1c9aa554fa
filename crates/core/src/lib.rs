//! The recommender core of recstream: everything about the model, nothing about Kafka.
//!
//! The pieces, in the order data flows through them:
//!
//! - [`data`] reads MovieLens-style ratings and item files (`u.data`,
//!   `ratings.dat`, `ratings.csv`, RecBole `.inter`) into a [`data::Dataset`]
//!   of dense indices, with [`ids`] mapping raw ids back and forth.
//! - [`svd`] trains scikit-surprise's `SVD` (biased matrix factorisation by
//!   SGD) sequentially or block-parallel; [`synth`] makes structured
//!   synthetic data for tests and scale benchmarks.
//! - [`model`] bundles a trained model with its ids, titles and the items each
//!   user already rated ([`seen`]); [`modelfile`] stores it as a versioned,
//!   checksummed `.rsm` file; [`surprise`] converts it from and to the
//!   `.npz` a scikit-surprise `SVD` is exported to (read and written by the
//!   bounds-checked [`npy`] and [`npz`] codecs).
//! - [`topn`] is the serving hot path (transposed item factors and a partial
//!   top-N selection), used by [`recommend`] to answer a raw user id.
//! - [`eval`] cross-validates like surprise's `cross_validate` and adds
//!   ranking metrics.
//! - [`online`] keeps a model learning from single ratings and describes each
//!   change as an update that followers apply.
//!
//! The crate does no I/O beyond reading and writing the files it is given:
//! no network, no async runtime, no Kafka. The streaming layer builds on it.

pub mod data;
pub mod eval;
pub mod ids;
pub mod model;
pub mod modelfile;
pub mod npy;
pub mod npz;
pub mod online;
pub mod recommend;
pub mod seen;
pub mod surprise;
pub mod svd;
pub mod synth;
pub mod topn;

pub use data::{Dataset, Rating, RatingScale};
pub use ids::{IdMap, RawId};
pub use model::{FitConfig, Model, ModelMeta};
pub use recommend::{Recommendation, Recommendations, Recommender};
pub use svd::{Hyperparams, SvdModel};

/// How hard the workspace's fuzz suites (property tests over outside input)
/// push: one place, so that CI and `bench/fuzz.sh` reach every suite.
#[doc(hidden)]
pub mod testing {
    /// Cases per fuzz target: `PROPTEST_CASES`, else 10,000 under CI (`CI`
    /// set), else 1,000.
    pub fn fuzz_cases() -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if std::env::var_os("CI").is_some() {
                10_000
            } else {
                1_000
            })
    }
}
