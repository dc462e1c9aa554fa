//! Grouped top-N: a group of users scored against the catalogue in one pass,
//! each user's best n picked as the item panels go by.
//!
//! One user against the catalogue is 168k multiply-adds at ML-100K size (and
//! 6 million at 60,000 items); done one user at a time, each request reads
//! the whole item matrix again and the arithmetic waits on memory. Here the
//! item panels ([`PANEL`] items by every factor, 25 KiB at 100 factors)
//! stream past once per group: while a panel is in L1, a register-tiled
//! micro-kernel scores it for up to four users at a time, with a tile of
//! 4 users x 64 items of accumulators (sixteen AVX-512 registers) that never
//! touch memory until the panel is done. The scores then go straight into
//! selection without a score vector: one vector compare per 16 items against
//! the user's running n-th best score, and only the items that beat it (a
//! few per user once the first panels have set the bar) are checked against
//! the user's rated items and inserted into the best-n list.
//!
//! The arithmetic is the reference one of [`ItemIndex::score_into`], bit for
//! bit: start from `b_i`, add `p_f * q_if` factor by factor, each product
//! and sum rounded on its own (no fused multiply-add, which would round once
//! and so differ in the last bit). On the AMD Zen 4 this was measured on,
//! multiplies and adds run on separate pipes, so the unfused pair costs the
//! same throughput as a fused one. Selection keeps the same order and ties
//! as [`select_top_n`](super::select_top_n): items are offered per user in
//! increasing index order, and an equal score never displaces an earlier one.
//!
//! Three kernels share the panel loop: the portable one (plain Rust over 8
//! lanes, which compilers vectorise for any target), its AVX2 twin (the same
//! source compiled with AVX2 enabled, over 16 lanes) and a hand-written
//! AVX-512 tile. Tests check each against the reference path.

use super::{ItemIndex, PANEL, Scored};
use crate::svd::kernels::Kernel;

/// One user's top-N question.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The user's factors (as long as the items').
    pub factors: &'a [f32],
    /// How many items to return.
    pub n: usize,
    /// Items never to return, each slice sorted ascending (rated items:
    /// the training ones and those rated since).
    pub exclude: [&'a [u32]; 2],
}

/// Users whose selection state sits on the stack at once; larger groups are
/// scanned in successive passes of this many.
pub(super) const MAX_GROUP: usize = 128;

/// A user's rated items, read panel by panel in increasing order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Exclusions<'a> {
    rows: [&'a [u32]; 2],
    /// Per row, how far the panels offered so far have read it.
    at: [usize; 2],
}

impl<'a> Exclusions<'a> {
    const NONE: Exclusions<'static> = Exclusions {
        rows: [&[], &[]],
        at: [0, 0],
    };

    /// The items of `rows` (each sorted ascending).
    pub(super) fn new(rows: [&'a [u32]; 2]) -> Self {
        Exclusions { rows, at: [0, 0] }
    }

    /// The items of the panel starting at `base` that are in a row, as
    /// bits. Panels are visited in increasing order, so each row is read
    /// once per scan, from where the previous panel stopped.
    pub(super) fn in_panel(&mut self, base: u32) -> u64 {
        let end = base.saturating_add(PANEL as u32);
        let mut bits = 0u64;
        for (row, at) in self.rows.iter().zip(self.at.iter_mut()) {
            while let Some(&item) = row.get(*at) {
                if item >= end {
                    break;
                }
                if item >= base {
                    bits |= 1 << (item - base);
                }
                *at += 1;
            }
        }
        bits
    }
}

/// A user's selection state while the panels stream past.
#[derive(Debug, Clone, Copy)]
struct Pick<'a> {
    /// Scores must beat this to be looked at: the n-th best so far, or
    /// negative infinity while fewer than n are kept (positive infinity
    /// when n is 0).
    threshold: f32,
    n: usize,
    exclusions: Exclusions<'a>,
}

impl<'a> Pick<'a> {
    const IDLE: Pick<'static> = Pick {
        threshold: f32::INFINITY,
        n: 0,
        exclusions: Exclusions::NONE,
    };

    fn new(query: &Query<'a>) -> Self {
        Pick {
            threshold: if query.n == 0 {
                f32::INFINITY
            } else {
                f32::NEG_INFINITY
            },
            n: query.n,
            exclusions: Exclusions::new(query.exclude),
        }
    }

    /// Offers the panel's items whose bit is set in `mask` (those that beat
    /// the threshold when the mask was taken), lowest index first, keeping
    /// `best` sorted by descending score, ties by lower index.
    #[inline(never)]
    fn offer(&mut self, best: &mut Vec<Scored>, base: u32, scores: &[f32; PANEL], mask: u64) {
        let mut mask = mask & !self.exclusions.in_panel(base);
        while mask != 0 {
            let j = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            let score = scores[j];
            // The threshold may have risen since the mask was taken.
            if score > self.threshold {
                let item = base + j as u32;
                // Insert from the bottom, where most newcomers land: a full
                // list gives up its last entry (the one the newcomer beat).
                let new = Scored { item, score };
                let mut at = if best.len() < self.n {
                    best.push(new);
                    best.len() - 1
                } else {
                    self.n - 1
                };
                while at > 0 && best[at - 1].score < score {
                    best[at] = best[at - 1];
                    at -= 1;
                }
                best[at] = new;
                if best.len() == self.n {
                    self.threshold = best[self.n - 1].score;
                }
            }
        }
    }

    /// Offers a panel's scores, after one comparison per item.
    #[inline(always)]
    fn offer_panel(&mut self, best: &mut Vec<Scored>, base: u32, scores: &[f32; PANEL]) {
        let threshold = self.threshold;
        let mut mask = 0u64;
        for (j, &s) in scores.iter().enumerate() {
            mask |= u64::from(s > threshold) << j;
        }
        if mask != 0 {
            self.offer(best, base, scores, mask);
        }
    }
}

/// Answers `queries` (whose factor rows are all `index.n_factors` long)
/// into `out` with `kernel`.
pub(super) fn scan(
    kernel: Kernel,
    index: &ItemIndex,
    queries: &[Query<'_>],
    out: &mut [Vec<Scored>],
) {
    for (queries, out) in queries.chunks(MAX_GROUP).zip(out.chunks_mut(MAX_GROUP)) {
        let mut picks = [Pick::IDLE; MAX_GROUP];
        let picks = &mut picks[..queries.len()];
        for ((pick, query), best) in picks.iter_mut().zip(queries).zip(out.iter_mut()) {
            *pick = Pick::new(query);
            best.clear();
        }
        match kernel {
            Kernel::Portable => scan_portable(index, queries, picks, out),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Avx2` is only produced on CPUs with AVX2.
            Kernel::Avx2 => unsafe { scan_avx2(index, queries, picks, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Kernel::Avx512` is only produced on CPUs with AVX-512F.
            Kernel::Avx512 => unsafe { avx512::scan(index, queries, picks, out) },
        }
    }
}

/// The loop every kernel shares: each panel once, and while it is in cache,
/// the group's users in tiles of up to four, each tile scored by
/// `$tile::<USERS, ...>` (which offers the scores to the tile's picks).
macro_rules! scan_panels {
    ($index:ident, $queries:ident, $picks:ident, $out:ident, $tile:ident $(, $lanes:literal)?) => {{
        let k = $index.n_factors;
        for (p, bias) in $index.bias.chunks_exact(PANEL).enumerate() {
            let panel = &$index.panels[p * PANEL * k..(p + 1) * PANEL * k];
            let base = (p * PANEL) as u32;
            let mut u = 0;
            while u < $queries.len() {
                let (q, pick, out) = (&$queries[u..], &mut $picks[u..], &mut $out[u..]);
                u += match q.len() {
                    1 => $tile::<1 $(, $lanes)?>(panel, bias, base, q, pick, out),
                    2 => $tile::<2 $(, $lanes)?>(panel, bias, base, q, pick, out),
                    3 => $tile::<3 $(, $lanes)?>(panel, bias, base, q, pick, out),
                    _ => $tile::<4 $(, $lanes)?>(panel, bias, base, q, pick, out),
                };
            }
        }
    }};
}

/// The portable kernel: [`tile_lanes`] over 8 lanes (two SSE or NEON
/// registers per user, eight accumulators for a tile of four users).
fn scan_portable(
    index: &ItemIndex,
    queries: &[Query<'_>],
    picks: &mut [Pick<'_>],
    out: &mut [Vec<Scored>],
) {
    scan_panels!(index, queries, picks, out, tile_lanes, 8);
}

/// The AVX2 twin of [`scan_portable`]: the same source, compiled with AVX2
/// so that 16 lanes are two 256-bit registers. Twins because the portable
/// build cannot assume AVX2, and AVX2 machines without AVX-512 are common.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn scan_avx2(
    index: &ItemIndex,
    queries: &[Query<'_>],
    picks: &mut [Pick<'_>],
    out: &mut [Vec<Scored>],
) {
    scan_panels!(index, queries, picks, out, tile_lanes, 16);
}

/// Scores one panel for the first `U` queries, `L` items at a time (a
/// `U x L` tile of accumulators), then offers each user the panel's scores.
/// Returns `U`.
#[inline(always)]
fn tile_lanes<const U: usize, const L: usize>(
    panel: &[f32],
    bias: &[f32],
    base: u32,
    queries: &[Query<'_>],
    picks: &mut [Pick<'_>],
    out: &mut [Vec<Scored>],
) -> usize {
    let k = panel.len() / PANEL;
    let users: [&[f32]; U] = std::array::from_fn(|u| &queries[u].factors[..k]);
    let mut scores = [[0.0f32; PANEL]; U];
    for c in (0..PANEL).step_by(L) {
        let mut acc = [[0.0f32; L]; U];
        for a in acc.iter_mut() {
            a.copy_from_slice(&bias[c..c + L]);
        }
        for (f, row) in panel.chunks_exact(PANEL).enumerate() {
            let row = &row[c..c + L];
            for (a, user) in acc.iter_mut().zip(&users) {
                let p = user[f];
                for (s, &q) in a.iter_mut().zip(row) {
                    *s += p * q;
                }
            }
        }
        for (s, a) in scores.iter_mut().zip(&acc) {
            s[c..c + L].copy_from_slice(a);
        }
    }
    for ((pick, best), scores) in picks.iter_mut().zip(out.iter_mut()).zip(&scores) {
        pick.offer_panel(best, base, scores);
    }
    U
}

/// The hand-written AVX-512 tile.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use std::arch::x86_64::*;

    use super::{ItemIndex, PANEL, Pick, Query, Scored};

    /// The 64 floats from `at` as four registers.
    ///
    /// # Safety
    /// 64 floats must be readable from `at` (unaligned is fine).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::topn) unsafe fn load_panel_row(at: *const f32) -> [__m512; 4] {
        // SAFETY: the caller vouches for 64 floats from `at`.
        [0, 16, 32, 48].map(|o| unsafe { _mm512_loadu_ps(at.add(o)) })
    }

    /// The 64 lanes of four registers, in order.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::topn) fn panel_lanes(v: &[__m512; 4]) -> [f32; PANEL] {
        let mut lanes = [0.0f32; PANEL];
        for (chunk, &r) in lanes.chunks_exact_mut(16).zip(v) {
            // SAFETY: each chunk holds exactly 16 floats.
            unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), r) };
        }
        lanes
    }

    /// The lanes of four registers for which `lane OP x` holds, as bits
    /// (OP a `_CMP_..._OQ` predicate: false for NaN).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(in crate::topn) fn panel_mask<const OP: i32>(v: &[__m512; 4], x: f32) -> u64 {
        let x = _mm512_set1_ps(x);
        let mut mask = 0u64;
        for (i, &r) in v.iter().enumerate() {
            mask |= u64::from(_mm512_cmp_ps_mask::<OP>(r, x)) << (16 * i);
        }
        mask
    }

    /// The AVX-512 kernel.
    #[target_feature(enable = "avx512f")]
    pub(super) fn scan(
        index: &ItemIndex,
        queries: &[Query<'_>],
        picks: &mut [Pick<'_>],
        out: &mut [Vec<Scored>],
    ) {
        scan_panels!(index, queries, picks, out, tile);
    }

    /// Scores one panel for the first `U` queries with `U x 4` registers of
    /// 16 accumulators (the whole panel: 64 items), reading each factor row
    /// of the panel once for all `U` users, then compares each register with
    /// the user's threshold and offers only what beats it. Returns `U`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn tile<const U: usize>(
        panel: &[f32],
        bias: &[f32],
        base: u32,
        queries: &[Query<'_>],
        picks: &mut [Pick<'_>],
        out: &mut [Vec<Scored>],
    ) -> usize {
        let k = panel.len() / PANEL;
        let bias = &bias[..PANEL];
        let users: [&[f32]; U] = std::array::from_fn(|u| &queries[u].factors[..k]);
        let mut acc = [[_mm512_setzero_ps(); 4]; U];
        // SAFETY: `bias` has PANEL = 64 floats, read as four 16-float loads;
        // `panel` has k rows of PANEL floats, and row f is read at
        // f * PANEL .. f * PANEL + 64 for f < k; each user row has k floats
        // and is read at f < k. Unaligned loads are used throughout.
        unsafe {
            let start = load_panel_row(bias.as_ptr());
            for a in acc.iter_mut() {
                *a = start;
            }
            let q = panel.as_ptr();
            for f in 0..k {
                let r = load_panel_row(q.add(f * PANEL));
                for (a, user) in acc.iter_mut().zip(&users) {
                    let p = _mm512_set1_ps(*user.get_unchecked(f));
                    for (s, &q) in a.iter_mut().zip(&r) {
                        // Multiply, then add: two roundings, as the reference.
                        *s = _mm512_add_ps(*s, _mm512_mul_ps(p, q));
                    }
                }
            }
        }
        for ((pick, best), a) in picks.iter_mut().zip(out.iter_mut()).zip(&acc) {
            let mask = panel_mask::<_CMP_GT_OQ>(a, pick.threshold);
            if mask != 0 {
                pick.offer(best, base, &panel_lanes(a), mask);
            }
        }
        U
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topn::tests::{model, reference, users};
    use proptest::prelude::*;

    /// Every kernel this CPU can run.
    fn kernels() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if crate::svd::kernels::avx2_available() {
                all.push(Kernel::Avx2);
            }
            if crate::svd::kernels::avx512_available() {
                all.push(Kernel::Avx512);
            }
        }
        all
    }

    /// Checks every kernel against the reference on `queries`, exactly.
    fn check(index: &ItemIndex, queries: &[Query<'_>]) -> Result<(), TestCaseError> {
        let expected: Vec<Vec<Scored>> = queries.iter().map(|q| reference(index, q)).collect();
        for kernel in kernels() {
            // Stale contents must not leak into the answers.
            let mut out = vec![
                vec![Scored {
                    item: 7,
                    score: 1e9
                }];
                queries.len()
            ];
            scan(kernel, index, queries, &mut out);
            for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
                let (got, want): (Vec<_>, Vec<_>) = (
                    got.iter().map(|s| (s.item, s.score.to_bits())).collect(),
                    want.iter().map(|s| (s.item, s.score.to_bits())).collect(),
                );
                prop_assert_eq!(got, want, "{:?}, query {}", kernel, i);
            }
        }
        Ok(())
    }

    #[test]
    fn a_catalogue_of_one_item() -> Result<(), TestCaseError> {
        let index = ItemIndex::build(&model(1, 5, 3));
        let rows = users(3, 5, 4);
        let queries: Vec<Query<'_>> = rows
            .iter()
            .map(|f| Query {
                factors: f,
                n: 10,
                exclude: [&[], &[]],
            })
            .collect();
        check(&index, &queries)?;
        let mut out = vec![Vec::new(); 3];
        index.top_n_many(&queries, &mut out);
        assert!(out.iter().all(|best| best.len() == 1 && best[0].item == 0));
        Ok(())
    }

    #[test]
    fn users_who_rated_all_but_three_items_get_those_three() -> Result<(), TestCaseError> {
        let index = ItemIndex::build(&model(200, 19, 8));
        let rows = users(6, 19, 9);
        let keep = [
            [0u32, 1, 2],
            [5, 64, 199],
            [63, 64, 65],
            [7, 130, 131],
            [197, 198, 199],
            [1, 100, 150],
        ];
        let excluded: Vec<Vec<u32>> = keep
            .iter()
            .map(|keep| (0..200).filter(|i| !keep.contains(i)).collect())
            .collect();
        let queries: Vec<Query<'_>> = rows
            .iter()
            .zip(&excluded)
            .enumerate()
            .map(|(u, (f, ex))| {
                // Split the rated items over both rows, as training and online ratings are.
                let (a, b) = ex.split_at(ex.len() * u / 6);
                Query {
                    factors: f,
                    n: 10,
                    exclude: [a, b],
                }
            })
            .collect();
        check(&index, &queries)?;
        let mut out = vec![Vec::new(); queries.len()];
        index.top_n_many(&queries, &mut out);
        for (best, keep) in out.iter().zip(&keep) {
            let mut items: Vec<u32> = best.iter().map(|s| s.item).collect();
            items.sort_unstable();
            assert_eq!(items, keep);
        }
        Ok(())
    }

    #[test]
    fn ties_prefer_the_lower_item_index_in_every_kernel() -> Result<(), TestCaseError> {
        // Identical items score identically: only the index separates them.
        let mut m = model(150, 4, 2);
        for i in 0..150 {
            let src = (i % 3) * 4;
            let row: Vec<f32> = m.item_factors[src..src + 4].to_vec();
            m.item_factors[i * 4..i * 4 + 4].copy_from_slice(&row);
            m.item_bias[i] = m.item_bias[i % 3];
        }
        let index = ItemIndex::build(&m);
        let rows = users(5, 4, 1);
        let queries: Vec<Query<'_>> = rows
            .iter()
            .map(|f| Query {
                factors: f,
                n: 7,
                exclude: [&[0, 70], &[]],
            })
            .collect();
        check(&index, &queries)
    }

    proptest! {
        #[test]
        fn every_kernel_matches_the_reference_exactly(
            n_items in 1usize..400,
            k in 0usize..37,
            n_users in 1usize..11,
            n in 0usize..30,
            seed in any::<u64>(),
            seen in proptest::collection::btree_set(0u32..450, 0..120),
        ) {
            let mut m = model(n_items, k, seed);
            // Some unknown items, never recommended.
            if n_items > 3 {
                m.item_counts[n_items / 2] = 0;
            }
            let index = ItemIndex::build(&m);
            let rows = users(n_users, k, seed);
            let seen: Vec<u32> = seen.into_iter().collect();
            let queries: Vec<Query<'_>> = rows
                .iter()
                .enumerate()
                .map(|(u, f)| Query {
                    factors: f,
                    // Some asks are larger than the catalogue.
                    n: n + u * 40,
                    exclude: [&seen[..seen.len() * u / n_users], &seen[seen.len() / 2..]],
                })
                .collect();
            check(&index, &queries)?;
        }
    }

    #[test]
    fn groups_larger_than_the_stack_state_are_answered_in_passes() -> Result<(), TestCaseError> {
        let index = ItemIndex::build(&model(300, 12, 5));
        let rows = users(MAX_GROUP + 5, 12, 6);
        let queries: Vec<Query<'_>> = rows
            .iter()
            .map(|f| Query {
                factors: f,
                n: 10,
                exclude: [&[3, 4, 5], &[]],
            })
            .collect();
        check(&index, &queries)
    }
}
