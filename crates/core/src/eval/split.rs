//! K-fold splits of a rating list, the way surprise's `KFold` makes them.
//!
//! Indices are shuffled once with the seed, then cut into `k` consecutive
//! folds whose sizes differ by at most one (the first `n % k` folds get the
//! extra rating). Every rating is in exactly one test fold.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_xoshiro::Xoshiro256PlusPlus;

/// The test indices of each fold.
pub fn kfold(n: usize, k: usize, seed: u64) -> Vec<Vec<usize>> {
    let k = k.clamp(1, n.max(1));
    let mut indices: Vec<usize> = (0..n).collect();
    indices.shuffle(&mut Xoshiro256PlusPlus::seed_from_u64(seed));
    let mut folds = Vec::with_capacity(k);
    let mut stop = 0;
    for fold in 0..k {
        let start = stop;
        stop += n / k + usize::from(fold < n % k);
        folds.push(indices[start..stop].to_vec());
    }
    folds
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn fold_sizes_differ_by_at_most_one() {
        let folds = kfold(103, 5, 0);
        assert_eq!(
            folds.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![21, 21, 21, 20, 20]
        );
    }

    proptest! {
        #[test]
        fn folds_partition_all_indices(n in 0usize..500, k in 1usize..12, seed in any::<u64>()) {
            let folds = kfold(n, k, seed);
            let mut all: Vec<usize> = folds.concat();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(kfold(n, k, seed), folds);
        }
    }
}
