//! Top-N scoring: the hot path of every recommendation request.
//!
//! Scoring one user against the catalogue is `b_i + q_i · p_u` for every item
//! `i`. Kept item-major, that is a dot product per item, which vectorises
//! poorly (a horizontal sum per item). [`ItemIndex`] instead stores the item
//! factors transposed, in panels of [`PANEL`] items: inside a panel, one
//! contiguous row of 64 values per factor, and the panels one after the
//! other, so the whole matrix streams past sequentially (which matters when
//! a large catalogue does not fit in cache). Scoring a panel is then
//! `scores += p_u[f] * row_f` for each factor, a pure element-wise
//! multiply-add. [`ItemIndex::top_n_many`] does that for a
//! group of users at once, with the scores in registers, and picks each
//! user's best n as the panels go by; [`ItemIndex::score_into`] and
//! [`select_top_n`] are the plain one-user path (whole score vector, then a
//! selection), which offline evaluation uses and the tests check the
//! grouped path against, score for score.

#[cfg(target_arch = "x86_64")]
mod bf16;
mod tile;

pub use tile::Query;

use multiversion::multiversion;

use crate::svd::SvdModel;

/// An item and its score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scored {
    /// Dense item index.
    pub item: u32,
    /// Unclipped score (`b_i + q_i · p_u`, before `mu + b_u`).
    pub score: f32,
}

/// Item biases and transposed item factors, laid out for scoring.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemIndex {
    n_items: usize,
    n_factors: usize,
    /// Panels of [`PANEL`] items; inside each, `n_factors` rows of [`PANEL`] values.
    panels: Vec<f32>,
    /// `b_i` per item slot (padding included), or negative infinity for
    /// slots that must never be recommended: unknown items and padding.
    bias: Vec<f32>,
    /// The same factors as bf16 pairs, on CPUs that can use them.
    #[cfg(target_arch = "x86_64")]
    bf16: Option<bf16::Bf16Panels>,
}

/// Items per panel: four 16-float AVX-512 registers (256 bytes) per factor
/// row. A panel of 100 factors is 25 KiB, which stays in L1 while a group
/// of users is scored against it.
pub const PANEL: usize = 64;

impl ItemIndex {
    /// Transposes the item side of `model`. Items the model never saw get a
    /// score of negative infinity and are never selected.
    pub fn build(model: &SvdModel) -> Self {
        let (n_items, k) = (model.n_items(), model.n_factors);
        let mut index = ItemIndex {
            n_items: 0,
            n_factors: k,
            panels: Vec::new(),
            bias: Vec::new(),
            #[cfg(target_arch = "x86_64")]
            bf16: bf16::available().then(|| bf16::Bf16Panels::new(k)),
        };
        index.reserve(n_items);
        index.n_items = n_items;
        for i in 0..n_items {
            let bias = if model.knows_item(i as u32) {
                model.item_bias[i]
            } else {
                f32::NEG_INFINITY
            };
            index.write(i, bias, &model.item_factors[i * k..(i + 1) * k]);
        }
        index
    }

    /// Number of items.
    pub fn n_items(&self) -> usize {
        self.n_items
    }

    /// Factors per item.
    pub fn n_factors(&self) -> usize {
        self.n_factors
    }

    /// Replaces one item's bias and factors (after an online update), making
    /// it recommendable. Items beyond the current end extend the index.
    pub fn set_item(&mut self, item: u32, bias: f32, factors: &[f32]) {
        let i = item as usize;
        if i >= self.n_items {
            self.reserve(i + 1);
            self.n_items = i + 1;
        }
        self.write(i, bias, factors);
    }

    /// Makes room for `n_items` item slots, whole panels at a time.
    fn reserve(&mut self, n_items: usize) {
        let panels = n_items.div_ceil(PANEL);
        self.panels.resize(panels * PANEL * self.n_factors, 0.0);
        self.bias.resize(panels * PANEL, f32::NEG_INFINITY);
        #[cfg(target_arch = "x86_64")]
        if let Some(bf16) = &mut self.bf16 {
            bf16.reserve(panels * PANEL);
        }
    }

    fn write(&mut self, item: usize, bias: f32, factors: &[f32]) {
        let (panel, offset) = (item / PANEL, item % PANEL);
        self.bias[item] = bias;
        let base = panel * self.n_factors * PANEL + offset;
        for (f, &q) in factors.iter().take(self.n_factors).enumerate() {
            self.panels[base + f * PANEL] = q;
        }
        #[cfg(target_arch = "x86_64")]
        if let Some(bf16) = &mut self.bf16 {
            bf16.write(item, self.n_factors, bias, factors);
        }
    }

    /// Stops using the bf16 pass (for comparing it with the exact kernels).
    pub fn without_bf16(mut self) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            self.bf16 = None;
        }
        self
    }

    /// True when [`ItemIndex::top_n_many`] goes through the bf16 pass.
    pub fn uses_bf16(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.bf16.is_some()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// Writes `b_i + q_i · user_factors` for every item into `scores`: the
    /// reference arithmetic, starting from `b_i` and adding the products
    /// factor by factor, each rounded (never fused).
    pub fn score_into(&self, user_factors: &[f32], scores: &mut Vec<f32>) {
        scores.clear();
        scores.extend_from_slice(&self.bias);
        if user_factors.len() == self.n_factors {
            score_panels(&self.panels, user_factors, scores);
        }
        scores.truncate(self.n_items);
    }

    /// The best `query.n` items for each query, as [`ItemIndex::score_into`]
    /// followed by [`select_top_n`] would pick them (the same scores, bit for
    /// bit, and the same order and ties), but in one pass over the item
    /// factors for the whole group and without a score vector: each panel
    /// is scored for every user while it is in L1, and only items that beat
    /// a user's current n-th best are looked at further. `out[i]` gets the
    /// answer to `queries[i]`; its storage is reused.
    pub fn top_n_many(&self, queries: &[Query<'_>], out: &mut [Vec<Scored>]) {
        if queries.iter().all(|q| q.factors.len() == self.n_factors) {
            #[cfg(target_arch = "x86_64")]
            if let Some(panels) = self.bf16.as_ref().filter(|p| p.usable(queries)) {
                bf16::scan(self, panels, queries, out);
                return;
            }
            tile::scan(crate::svd::kernels::Kernel::detect(), self, queries, out);
            return;
        }
        // A factor row of the wrong length scores by bias alone, as score_into does.
        let mut scores = Vec::new();
        for (query, best) in queries.iter().zip(out.iter_mut()) {
            self.score_into(query.factors, &mut scores);
            select_top_n(&mut scores, query.n, &query.exclude, best);
        }
    }
}

#[multiversion(targets("x86_64+avx512f", "x86_64+avx2", "x86_64+avx", "aarch64+neon"))]
fn score_panels(panels: &[f32], user: &[f32], scores: &mut [f32]) {
    if user.is_empty() {
        return;
    }
    let panel_len = PANEL * user.len();
    for (panel, out) in panels
        .chunks_exact(panel_len)
        .zip(scores.chunks_exact_mut(PANEL))
    {
        for (&p, row) in user.iter().zip(panel.chunks_exact(PANEL)) {
            for (s, &q) in out.iter_mut().zip(row) {
                *s += p * q;
            }
        }
    }
}

/// Keeps the `n` highest scores, skipping every item listed in `exclude`
/// (sorted slices) and every non-finite-from-below score. The result is in
/// descending score order, ties broken by lower item index. `scores` is used
/// as scratch: excluded entries are overwritten.
pub fn select_top_n(scores: &mut [f32], n: usize, exclude: &[&[u32]], out: &mut Vec<Scored>) {
    out.clear();
    if n == 0 {
        return;
    }
    for row in exclude {
        for &item in *row {
            if let Some(s) = scores.get_mut(item as usize) {
                *s = f32::NEG_INFINITY;
            }
        }
    }
    let mut threshold = f32::NEG_INFINITY;
    for (i, &s) in scores.iter().enumerate() {
        // NaN and excluded (-inf) entries never pass.
        if s > threshold {
            let at = out.partition_point(|x| x.score >= s);
            out.insert(
                at,
                Scored {
                    item: i as u32,
                    score: s,
                },
            );
            if out.len() > n {
                out.pop();
            }
            if out.len() == n {
                threshold = out[n - 1].score;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::RatingScale;
    use proptest::prelude::*;

    fn brute_force(scores: &[f32], n: usize, exclude: &[u32]) -> Vec<Scored> {
        let mut all: Vec<Scored> = scores
            .iter()
            .enumerate()
            .filter(|(i, s)| !exclude.contains(&(*i as u32)) && **s > f32::NEG_INFINITY)
            .map(|(i, &s)| Scored {
                item: i as u32,
                score: s,
            })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.item.cmp(&b.item)));
        all.truncate(n);
        all
    }

    /// The reference answer: the whole exact score vector, then the selection.
    pub(super) fn reference(index: &ItemIndex, query: &Query<'_>) -> Vec<Scored> {
        let (mut scores, mut best) = (Vec::new(), Vec::new());
        index.score_into(query.factors, &mut scores);
        select_top_n(&mut scores, query.n, &query.exclude, &mut best);
        best
    }

    /// Factor rows for `n_users` random users.
    pub(super) fn users(n_users: usize, k: usize, seed: u64) -> Vec<Vec<f32>> {
        (0..n_users as u64)
            .map(|u| model(1, k, seed ^ ((u + 1) * 0x9e37)).user_factors)
            .collect()
    }

    pub(super) fn model(n_items: usize, k: usize, seed: u64) -> SvdModel {
        let mut x = seed;
        let mut next = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        };
        SvdModel {
            n_factors: k,
            global_mean: 3.5,
            scale: RatingScale::FIVE_STARS,
            user_bias: vec![0.1],
            item_bias: (0..n_items).map(|_| next()).collect(),
            user_factors: (0..k).map(|_| next()).collect(),
            item_factors: (0..n_items * k).map(|_| next()).collect(),
            user_counts: vec![1],
            item_counts: vec![1; n_items],
        }
    }

    #[test]
    fn scores_equal_bias_plus_dot_product() {
        let m = model(5000, 37, 9);
        let index = ItemIndex::build(&m);
        let mut scores = Vec::new();
        index.score_into(m.user_row(0), &mut scores);
        for i in 0..5000u32 {
            let expected =
                m.item_bias[i as usize] + crate::svd::kernels::dot(m.item_row(i), m.user_row(0));
            assert!((scores[i as usize] - expected).abs() < 1e-4, "item {i}");
        }
    }

    #[test]
    fn unknown_items_are_never_recommended() {
        let mut m = model(4, 2, 1);
        m.item_counts[2] = 0;
        m.item_bias[2] = 100.0;
        let index = ItemIndex::build(&m);
        let mut scores = Vec::new();
        index.score_into(m.user_row(0), &mut scores);
        let mut out = Vec::new();
        select_top_n(&mut scores, 4, &[], &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|s| s.item != 2));
    }

    #[test]
    fn set_item_updates_and_grows_the_index() {
        let m = model(3, 2, 5);
        let mut index = ItemIndex::build(&m);
        index.set_item(4, 50.0, &[0.0, 0.0]);
        assert_eq!(index.n_items(), 5);
        index.set_item(40, 60.0, &[0.0, 0.0]);
        assert_eq!(index.n_items(), 41);
        let mut scores = Vec::new();
        index.score_into(m.user_row(0), &mut scores);
        assert_eq!(scores.len(), 41);
        assert_eq!(scores[4], 50.0);
        assert_eq!(scores[40], 60.0);
        assert_eq!(scores[3], f32::NEG_INFINITY);
        let mut out = Vec::new();
        select_top_n(&mut scores, 2, &[], &mut out);
        assert_eq!(out.iter().map(|s| s.item).collect::<Vec<_>>(), vec![40, 4]);
    }

    #[test]
    fn ties_prefer_the_lower_item_index() {
        let mut scores = vec![1.0, 2.0, 2.0, 0.5, 2.0];
        let mut out = Vec::new();
        select_top_n(&mut scores, 2, &[], &mut out);
        assert_eq!(out.iter().map(|s| s.item).collect::<Vec<_>>(), vec![1, 2]);
    }

    proptest! {
        #[test]
        fn selection_matches_a_full_sort(
            scores in proptest::collection::vec(prop_oneof![-5.0f32..5.0, Just(1.0f32), Just(f32::NAN)], 0..400),
            n in 0usize..30,
            exclude in proptest::collection::btree_set(0u32..400, 0..50),
        ) {
            let exclude: Vec<u32> = exclude.into_iter().collect();
            let clean: Vec<f32> = scores.iter().map(|s| if s.is_nan() { f32::NEG_INFINITY } else { *s }).collect();
            let expected = brute_force(&clean, n, &exclude);
            let mut work = scores.clone();
            let mut out = Vec::new();
            select_top_n(&mut work, n, &[&exclude], &mut out);
            prop_assert_eq!(out, expected);
        }

        #[test]
        fn fast_scores_match_naive_scores(n_items in 1usize..3000, k in 1usize..40, seed in any::<u64>()) {
            let m = model(n_items, k, seed);
            let index = ItemIndex::build(&m);
            let mut scores = Vec::new();
            index.score_into(m.user_row(0), &mut scores);
            for (i, score) in scores.iter().enumerate() {
                let naive: f32 = m.item_bias[i] + m.item_row(i as u32).iter().zip(m.user_row(0)).map(|(a, b)| a * b).sum::<f32>();
                prop_assert!((score - naive).abs() < 1e-4);
            }
        }
    }
}
