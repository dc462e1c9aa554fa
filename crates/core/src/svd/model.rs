//! The learned parameters of biased matrix factorisation and the rating estimate.
//!
//! Factors are stored row-major in one contiguous `Vec<f32>` per side (a user
//! row is `n_factors` floats), which is what the SGD kernel and the model file
//! want. Rating counts per user and item record what training saw: a count of
//! zero means "unknown", and the estimate then falls back exactly as
//! surprise's `SVD.estimate` does (global mean plus whichever bias is known).

use crate::data::RatingScale;

use super::kernels::dot;

/// Biases, factors and training counts of a factorisation model.
#[derive(Debug, Clone, PartialEq)]
pub struct SvdModel {
    /// Latent dimensions per user and item.
    pub n_factors: usize,
    /// Mean of the training ratings (0 for an unbiased model).
    pub global_mean: f32,
    /// Estimates are clipped to this range.
    pub scale: RatingScale,
    /// User biases `b_u`.
    pub user_bias: Vec<f32>,
    /// Item biases `b_i`.
    pub item_bias: Vec<f32>,
    /// User factors `p_u`, `n_users * n_factors`, row-major.
    pub user_factors: Vec<f32>,
    /// Item factors `q_i`, `n_items * n_factors`, row-major.
    pub item_factors: Vec<f32>,
    /// Training ratings per user; zero means the user is unknown to the model.
    pub user_counts: Vec<u32>,
    /// Training ratings per item; zero means the item is unknown to the model.
    pub item_counts: Vec<u32>,
}

impl SvdModel {
    /// Number of user rows.
    pub fn n_users(&self) -> usize {
        self.user_bias.len()
    }

    /// Number of item rows.
    pub fn n_items(&self) -> usize {
        self.item_bias.len()
    }

    /// The factor row of a user.
    pub fn user_row(&self, user: u32) -> &[f32] {
        let k = self.n_factors;
        &self.user_factors[user as usize * k..(user as usize + 1) * k]
    }

    /// The factor row of an item.
    pub fn item_row(&self, item: u32) -> &[f32] {
        let k = self.n_factors;
        &self.item_factors[item as usize * k..(item as usize + 1) * k]
    }

    /// True when training saw this user.
    pub fn knows_user(&self, user: u32) -> bool {
        self.user_counts.get(user as usize).is_some_and(|&c| c > 0)
    }

    /// True when training saw this item.
    pub fn knows_item(&self, item: u32) -> bool {
        self.item_counts.get(item as usize).is_some_and(|&c| c > 0)
    }

    /// The unclipped estimate `mu + b_u + b_i + q_i·p_u`, where unknown (or
    /// absent) users and items contribute neither bias nor factors.
    pub fn raw_estimate(&self, user: Option<u32>, item: Option<u32>) -> f32 {
        let user = user.filter(|&u| self.knows_user(u));
        let item = item.filter(|&i| self.knows_item(i));
        let mut estimate = self.global_mean;
        if let Some(u) = user {
            estimate += self.user_bias[u as usize];
        }
        if let Some(i) = item {
            estimate += self.item_bias[i as usize];
        }
        if let (Some(u), Some(i)) = (user, item) {
            estimate += dot(self.item_row(i), self.user_row(u));
        }
        estimate
    }

    /// The estimate clipped to the rating scale, as surprise's `predict` returns it.
    pub fn predict(&self, user: Option<u32>, item: Option<u32>) -> f32 {
        self.scale.clip(self.raw_estimate(user, item))
    }

    /// Appends a user with the given bias and factors (and no ratings yet);
    /// returns its index.
    pub fn push_user(&mut self, bias: f32, factors: &[f32]) -> u32 {
        self.user_bias.push(bias);
        push_row(&mut self.user_factors, factors, self.n_factors);
        self.user_counts.push(0);
        (self.user_bias.len() - 1) as u32
    }

    /// Appends an item with the given bias and factors (and no ratings yet);
    /// returns its index.
    pub fn push_item(&mut self, bias: f32, factors: &[f32]) -> u32 {
        self.item_bias.push(bias);
        push_row(&mut self.item_factors, factors, self.n_factors);
        self.item_counts.push(0);
        (self.item_bias.len() - 1) as u32
    }

    /// Mutable factor row of a user.
    pub fn user_row_mut(&mut self, user: u32) -> &mut [f32] {
        let k = self.n_factors;
        &mut self.user_factors[user as usize * k..(user as usize + 1) * k]
    }

    /// Mutable factor row of an item.
    pub fn item_row_mut(&mut self, item: u32) -> &mut [f32] {
        let k = self.n_factors;
        &mut self.item_factors[item as usize * k..(item as usize + 1) * k]
    }

    /// Checks that every array has the length the counts imply (the counts
    /// may come from a file: a product that overflows is an error too).
    pub fn check_shape(&self) -> Result<(), String> {
        let (users, items, k) = (self.n_users(), self.n_items(), self.n_factors);
        let factors = |what: &str, rows: usize| {
            rows.checked_mul(k)
                .ok_or_else(|| format!("{what}: {rows} rows of {k} factors overflow"))
        };
        let checks = [
            (
                "user factors",
                self.user_factors.len(),
                factors("user factors", users)?,
            ),
            (
                "item factors",
                self.item_factors.len(),
                factors("item factors", items)?,
            ),
            ("user counts", self.user_counts.len(), users),
            ("item counts", self.item_counts.len(), items),
        ];
        for (what, got, want) in checks {
            if got != want {
                return Err(format!("{what}: {got} values where {want} were expected"));
            }
        }
        Ok(())
    }
}

impl SvdModel {
    /// The first parameter array (or the global mean) holding a NaN or an
    /// infinity, named for messages ("user factors"), or `None` when every
    /// parameter is finite. Estimates from such a model are NaN: it must not
    /// be written, loaded or served.
    pub fn non_finite_parameters(&self) -> Option<&'static str> {
        if !self.global_mean.is_finite() {
            return Some("the global mean");
        }
        self.parameter_arrays()
            .into_iter()
            .find(|(_, values)| values.iter().any(|x| !x.is_finite()))
            .map(|(what, _)| what)
    }

    /// How many parameters (global mean, biases, factors) are NaN or infinite.
    pub fn count_non_finite(&self) -> usize {
        let arrays: usize = self
            .parameter_arrays()
            .iter()
            .map(|(_, values)| values.iter().filter(|x| !x.is_finite()).count())
            .sum();
        arrays + usize::from(!self.global_mean.is_finite())
    }

    fn parameter_arrays(&self) -> [(&'static str, &[f32]); 4] {
        [
            ("user biases", &self.user_bias),
            ("item biases", &self.item_bias),
            ("user factors", &self.user_factors),
            ("item factors", &self.item_factors),
        ]
    }
}

/// Appends exactly `k` values: `row` truncated or zero-padded.
fn push_row(matrix: &mut Vec<f32>, row: &[f32], k: usize) {
    matrix.extend(row.iter().copied().chain(std::iter::repeat(0.0)).take(k));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> SvdModel {
        SvdModel {
            n_factors: 2,
            global_mean: 3.0,
            scale: RatingScale::FIVE_STARS,
            user_bias: vec![0.5, 0.0],
            item_bias: vec![0.25, 9.0],
            user_factors: vec![1.0, 2.0, 5.0, 5.0],
            item_factors: vec![0.5, 0.5, 1.0, 1.0],
            user_counts: vec![3, 0],
            item_counts: vec![2, 1],
        }
    }

    #[test]
    fn estimate_adds_mean_biases_and_dot_product() {
        let m = tiny();
        assert_eq!(m.raw_estimate(Some(0), Some(0)), 3.0 + 0.5 + 0.25 + 1.5);
        assert_eq!(m.predict(Some(0), Some(0)), 5.0);
    }

    #[test]
    fn unknown_users_and_items_fall_back_like_surprise() {
        let m = tiny();
        // User 1 has no training ratings: mean + item bias only.
        assert_eq!(m.raw_estimate(Some(1), Some(0)), 3.25);
        assert_eq!(m.raw_estimate(None, Some(0)), 3.25);
        assert_eq!(m.raw_estimate(Some(0), None), 3.5);
        assert_eq!(m.raw_estimate(None, None), 3.0);
        assert_eq!(m.raw_estimate(Some(99), Some(99)), 3.0);
        assert_eq!(m.predict(None, Some(1)), 5.0);
    }

    #[test]
    fn non_finite_parameters_are_found_and_counted() {
        let mut m = tiny();
        assert_eq!((m.non_finite_parameters(), m.count_non_finite()), (None, 0));
        m.item_factors[3] = f32::NAN;
        m.item_factors[1] = f32::INFINITY;
        assert_eq!(m.non_finite_parameters(), Some("item factors"));
        m.user_bias[1] = f32::NEG_INFINITY;
        assert_eq!(m.non_finite_parameters(), Some("user biases"));
        m.global_mean = f32::NAN;
        assert_eq!(m.non_finite_parameters(), Some("the global mean"));
        assert_eq!(m.count_non_finite(), 4);
    }

    #[test]
    fn shape_check_catches_mismatched_arrays() {
        let mut m = tiny();
        assert!(m.check_shape().is_ok());
        m.item_factors.pop();
        assert_eq!(
            m.check_shape().unwrap_err(),
            "item factors: 3 values where 4 were expected"
        );
        // 2 rows times 2^63 factors wraps to 0 in 64 bits.
        let huge = SvdModel {
            n_factors: 1 << 63,
            user_factors: vec![],
            item_factors: vec![],
            ..tiny()
        };
        assert_eq!(
            huge.check_shape().unwrap_err(),
            "user factors: 2 rows of 9223372036854775808 factors overflow"
        );
    }
}
