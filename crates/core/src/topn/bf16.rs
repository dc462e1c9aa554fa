//! Grouped top-N through a bf16 candidate pass and an exact re-rank: the
//! same answers as the exact kernels, bit for bit, for a quarter of their
//! arithmetic.
//!
//! On CPUs with AVX-512 BF16 (AMD Zen 4, Intel Sapphire Rapids), one
//! `vdpbf16ps` does 32 multiply-adds of bfloat16 pairs into 16 FP32 sums,
//! where the exact kernel needs two instructions for 16. So the item
//! factors are also kept as bf16 pairs (half the bytes), and a group's
//! users are scored against them panel by panel, as in [`super::tile`].
//! Those scores are approximate, but their error is bounded: for item `i`
//! and user `p`, `|approx - exact| <= c * |p| * |q_i| + d * |b_i|`, from the
//! rounding of each factor to 8 bits of mantissa and of each FP32 sum (see
//! [`Bf16Panels::new`]). So each approximate score gives an interval that
//! holds the exact one. A user's n-th highest lower end, `L`, is a lower
//! bound on their exact n-th best score; any item whose upper end is below
//! `L` cannot be in their top n. The pass keeps only the others as
//! candidates (usually a few more than n), then computes their exact
//! scores with the reference arithmetic and selects from those with the
//! reference order and ties. The answer is therefore exactly the exact
//! kernels' answer, which the tests check.

use std::arch::x86_64::*;

use super::tile::avx512::{load_panel_row, panel_lanes, panel_mask};
use super::tile::{Exclusions, MAX_GROUP, Query};
use super::{ItemIndex, PANEL, Scored};

/// True when this CPU can run the bf16 pass.
pub(super) fn available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
}

/// Item factors as bf16 pairs, laid out for `vdpbf16ps`, with what the
/// error bound needs per item.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Bf16Panels {
    /// Factor pairs per item (`k / 2`, rounded up; an odd last factor is
    /// paired with 0).
    pairs: usize,
    /// Per panel, per factor pair, [`PANEL`] words: item `j`'s factors
    /// `2f` (low half) and `2f + 1` (high half), each as bf16.
    words: Vec<u32>,
    /// `|q_i|` (Euclidean) per item slot; 0 for padding.
    norms: Vec<f32>,
    /// `d * |b_i|` per item slot; 0 for padding.
    bias_slack: Vec<f32>,
    /// `c`: the bound's factor on `|p| * |q_i|`.
    product_slack: f32,
    /// The exact factors again, item after item, so that re-ranking a
    /// candidate reads one contiguous row rather than one cache line per
    /// factor of the panels.
    rows: Vec<f32>,
    k: usize,
    /// False when some factor is too large for bf16 (the pass is then
    /// not used: its bound would not hold).
    usable: bool,
}

/// Factors larger than this are not rounded to bf16 (their products could
/// overflow); no trained model comes near.
const LARGEST_FACTOR: f32 = 1e15;

impl Bf16Panels {
    /// Empty panels for `k` factors. The bound's constants: rounding `p_f`
    /// and `q_if` to bf16 (8-bit mantissa, round to nearest even) changes
    /// each product by at most `2^-8 + 2^-16` of its size; the FP32 sums of
    /// both the pass and the reference each add at most `(k + 2) * 2^-24`
    /// of `|b_i| + sum |p_f q_if|`. With `sum |p_f q_if| <= |p| |q_i|`
    /// (Cauchy-Schwarz), twice those is a safe `c` and `d`.
    pub(super) fn new(k: usize) -> Self {
        let sums = (k as f32 + 2.0) * 2f32.powi(-24);
        Bf16Panels {
            pairs: k.div_ceil(2),
            words: Vec::new(),
            norms: Vec::new(),
            bias_slack: Vec::new(),
            product_slack: 2.0 * (2f32.powi(-8) + 2f32.powi(-16) + 2.0 * sums * 1.01),
            rows: Vec::new(),
            k,
            usable: true,
        }
    }

    /// Makes room for `slots` item slots (whole panels).
    pub(super) fn reserve(&mut self, slots: usize) {
        self.words.resize(slots / PANEL * self.pairs * PANEL, 0);
        self.norms.resize(slots, 0.0);
        self.bias_slack.resize(slots, 0.0);
        self.rows.resize(slots * self.k, 0.0);
    }

    /// Stores item `item`'s factors and bias bound (the slot must exist).
    pub(super) fn write(&mut self, item: usize, k: usize, bias: f32, factors: &[f32]) {
        let (panel, offset) = (item / PANEL, item % PANEL);
        let base = panel * self.pairs * PANEL + offset;
        let factor = |f: usize| factors.get(f).copied().unwrap_or(0.0);
        for pair in 0..self.pairs {
            let (low, high) = (factor(2 * pair), factor(2 * pair + 1));
            self.words[base + pair * PANEL] = u32::from(bf16(low)) | (u32::from(bf16(high)) << 16);
        }
        let factors = &factors[..k.min(factors.len())];
        self.rows[item * self.k..][..factors.len()].copy_from_slice(factors);
        if factors.iter().any(|q| q.abs() > LARGEST_FACTOR) {
            self.usable = false;
        }
        self.norms[item] = factors.iter().map(|q| q * q).sum::<f32>().sqrt() * 1.01;
        self.bias_slack[item] = if bias.is_finite() {
            2.0 * (k as f32 + 2.0) * 2f32.powi(-24) * bias.abs() * 1.01
        } else {
            0.0
        };
    }

    /// False when the pass must not be used for this catalogue or these
    /// users (a factor too large for bf16).
    pub(super) fn usable(&self, queries: &[Query<'_>]) -> bool {
        self.usable
            && queries
                .iter()
                .all(|q| q.factors.iter().all(|p| p.abs() <= LARGEST_FACTOR))
    }
}

/// `x` as bf16 bits, rounded to nearest even.
fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1));
    (rounded >> 16) as u16
}

/// A user's part of the pass.
struct Hunt<'a> {
    /// The user's factors as bf16 pairs.
    pairs: Vec<u32>,
    /// `c * |p|`.
    slack: f32,
    n: usize,
    /// The highest lower ends seen, best first, at most `n`.
    lowers: Vec<f32>,
    /// The n-th highest lower end once there are `n` (negative infinity
    /// before; positive infinity when `n` is 0, so nothing is kept).
    floor: f32,
    exclusions: Exclusions<'a>,
}

impl<'a> Hunt<'a> {
    fn new(query: &Query<'a>, panels: &Bf16Panels) -> Self {
        let factor = |f: usize| query.factors.get(f).copied().unwrap_or(0.0);
        let norm = query.factors.iter().map(|p| p * p).sum::<f32>().sqrt() * 1.01;
        Hunt {
            pairs: (0..panels.pairs)
                .map(|pair| {
                    u32::from(bf16(factor(2 * pair)))
                        | (u32::from(bf16(factor(2 * pair + 1))) << 16)
                })
                .collect(),
            slack: panels.product_slack * norm,
            n: query.n,
            lowers: Vec::with_capacity(query.n),
            floor: if query.n == 0 {
                f32::INFINITY
            } else {
                f32::NEG_INFINITY
            },
            exclusions: Exclusions::new(query.exclude),
        }
    }

    /// Takes one panel's approximate scores (four registers of 16), with
    /// the panel's `|q_i|` and bias slack: raises the floor with their
    /// lower ends, then keeps as candidates (in `kept`, with their upper
    /// ends) the items whose upper end reaches it. Vector compares; only the
    /// items that pass are looked at one by one.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn take(
        &mut self,
        kept: &mut Vec<Scored>,
        base: u32,
        scores: &[__m512; 4],
        norms: &[__m512; 4],
        bias_slack: &[__m512; 4],
    ) {
        let included = !self.exclusions.in_panel(base);
        let slack = _mm512_set1_ps(self.slack);
        // The last term covers sums flushed to zero below 2^-126.
        let tiny = _mm512_set1_ps(1e-30);
        let mut lower = [_mm512_setzero_ps(); 4];
        let mut upper = [_mm512_setzero_ps(); 4];
        for v in 0..4 {
            let e = _mm512_add_ps(_mm512_fmadd_ps(slack, norms[v], bias_slack[v]), tiny);
            lower[v] = _mm512_sub_ps(scores[v], e);
            upper[v] = _mm512_add_ps(scores[v], e);
        }
        let mut rising = panel_mask::<_CMP_GT_OQ>(&lower, self.floor) & included;
        if rising != 0 {
            let lows = panel_lanes(&lower);
            while rising != 0 {
                let j = rising.trailing_zeros() as usize;
                rising &= rising - 1;
                if lows[j] > self.floor {
                    self.raise(lows[j]);
                }
            }
        }
        let mut reaching = panel_mask::<_CMP_GE_OQ>(&upper, self.floor) & included;
        if reaching != 0 {
            let ups = panel_lanes(&upper);
            while reaching != 0 {
                let j = reaching.trailing_zeros() as usize;
                reaching &= reaching - 1;
                kept.push(Scored {
                    item: base + j as u32,
                    score: ups[j],
                });
            }
        }
        // Keep the candidate list short: drop those the floor has passed.
        if kept.len() > 4 * self.n + 2 * PANEL {
            let floor = self.floor;
            kept.retain(|c| c.score >= floor);
        }
    }

    /// Adds a lower end above the floor.
    fn raise(&mut self, lower: f32) {
        let at = self.lowers.partition_point(|&l| l >= lower);
        self.lowers.insert(at, lower);
        self.lowers.truncate(self.n);
        if self.lowers.len() == self.n {
            self.floor = self.lowers[self.n - 1];
        }
    }
}

/// Answers `queries` (whose factor rows are all `index.n_factors` long)
/// into `out` with the bf16 pass and the exact re-rank.
pub(super) fn scan(
    index: &ItemIndex,
    panels: &Bf16Panels,
    queries: &[Query<'_>],
    out: &mut [Vec<Scored>],
) {
    for (queries, out) in queries.chunks(MAX_GROUP).zip(out.chunks_mut(MAX_GROUP)) {
        let mut hunts: Vec<Hunt<'_>> = queries.iter().map(|q| Hunt::new(q, panels)).collect();
        for kept in out.iter_mut() {
            kept.clear();
        }
        // SAFETY: only called when `available()` said the CPU has AVX-512
        // F and BF16 (see `ItemIndex::top_n_many`).
        unsafe { pass(index, panels, &mut hunts, out) };
        for ((hunt, kept), query) in hunts.iter().zip(out.iter_mut()).zip(queries) {
            rerank(index, panels, query, hunt.floor, hunt.n, kept);
        }
    }
}

/// The approximate pass: every panel once, the group's users four at a time.
#[target_feature(enable = "avx512f,avx512bf16")]
fn pass(index: &ItemIndex, panels: &Bf16Panels, hunts: &mut [Hunt<'_>], out: &mut [Vec<Scored>]) {
    let words_per_panel = panels.pairs * PANEL;
    for (p, bias) in index.bias.chunks_exact(PANEL).enumerate() {
        let words = &panels.words[p * words_per_panel..(p + 1) * words_per_panel];
        let base = (p * PANEL) as u32;
        let mut u = 0;
        while u < hunts.len() {
            let (h, o) = (&mut hunts[u..], &mut out[u..]);
            u += match h.len() {
                1 => tile::<1>(words, bias, base, h, o, panels),
                2 => tile::<2>(words, bias, base, h, o, panels),
                3 => tile::<3>(words, bias, base, h, o, panels),
                _ => tile::<4>(words, bias, base, h, o, panels),
            };
        }
    }
}

/// One panel for the first `U` users: `U x 4` registers of 16 sums, each
/// factor pair's item words read once for all of them. Returns `U`.
#[inline]
#[target_feature(enable = "avx512f,avx512bf16")]
fn tile<const U: usize>(
    words: &[u32],
    bias: &[f32],
    base: u32,
    hunts: &mut [Hunt<'_>],
    out: &mut [Vec<Scored>],
    panels: &Bf16Panels,
) -> usize {
    let pairs = words.len() / PANEL;
    let bias = &bias[..PANEL];
    let users: [&[u32]; U] = std::array::from_fn(|u| &hunts[u].pairs[..pairs]);
    let mut acc = [[_mm512_setzero_ps(); 4]; U];
    // SAFETY: `bias` has PANEL = 64 floats, read as four 16-float loads;
    // `words` has `pairs` rows of PANEL words, row `f` read at
    // f * PANEL .. f * PANEL + 64 for f < pairs; each user row has `pairs`
    // words, read at f < pairs. Unaligned loads throughout.
    unsafe {
        let start = load_panel_row(bias.as_ptr());
        for a in acc.iter_mut() {
            *a = start;
        }
        let w = words.as_ptr();
        for f in 0..pairs {
            let row = w.add(f * PANEL);
            let r: [__m512bh; 4] = [
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(row.cast())),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(row.add(16).cast())),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(row.add(32).cast())),
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(row.add(48).cast())),
            ];
            for (a, user) in acc.iter_mut().zip(&users) {
                let p = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                    *user.get_unchecked(f) as i32,
                ));
                for (s, &q) in a.iter_mut().zip(&r) {
                    *s = _mm512_dpbf16_ps(*s, q, p);
                }
            }
        }
    }
    let slot = base as usize;
    // SAFETY: the norms and bias slack have a value per item slot, whole
    // panels: 64 from `slot`, read as four 16-float loads.
    let (norms, bias_slack) = unsafe {
        (
            load_panel_row(panels.norms[slot..slot + PANEL].as_ptr()),
            load_panel_row(panels.bias_slack[slot..slot + PANEL].as_ptr()),
        )
    };
    for ((hunt, kept), a) in hunts.iter_mut().zip(out.iter_mut()).zip(&acc) {
        hunt.take(kept, base, a, &norms, &bias_slack);
    }
    U
}

/// Turns a user's candidates into their exact top n: drops those whose
/// upper end is below the final floor, scores the rest with the reference
/// arithmetic, and keeps the n best (descending, ties by lower index; never
/// negative infinity or NaN), as [`super::select_top_n`] would.
fn rerank(
    index: &ItemIndex,
    panels: &Bf16Panels,
    query: &Query<'_>,
    floor: f32,
    n: usize,
    kept: &mut Vec<Scored>,
) {
    kept.retain(|c| c.score >= floor);
    // Eight candidates at a time: eight independent chains of additions,
    // each in the reference order (the bias, then factor by factor).
    for group in kept.chunks_mut(8) {
        let rows: [&[f32]; 8] = std::array::from_fn(|c| {
            let item = group.get(c).map_or(0, |s| s.item as usize);
            &panels.rows[item * panels.k..(item + 1) * panels.k]
        });
        let mut sums: [f32; 8] =
            std::array::from_fn(|c| group.get(c).map_or(0.0, |s| index.bias[s.item as usize]));
        for (f, &p) in query.factors.iter().enumerate() {
            for (sum, row) in sums.iter_mut().zip(&rows) {
                *sum += p * row[f];
            }
        }
        for (c, sum) in group.iter_mut().zip(sums) {
            c.score = sum;
        }
    }
    kept.retain(|c| c.score > f32::NEG_INFINITY);
    // No NaN is left, so the partial order is total (and, as in the
    // reference, 0 and -0 tie).
    kept.sort_unstable_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.item.cmp(&b.item))
    });
    kept.truncate(n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topn::tests::{model, reference, users};
    use proptest::prelude::*;

    /// Runs the pass on `queries` and checks it against the reference,
    /// score bits included; `false` when the CPU cannot run it.
    fn check(index: &ItemIndex, queries: &[Query<'_>]) -> Result<bool, TestCaseError> {
        let Some(panels) = index.bf16.as_ref() else {
            return Ok(false);
        };
        prop_assert!(panels.usable(queries));
        let mut out = vec![
            vec![Scored {
                item: 9,
                score: 1e9
            }];
            queries.len()
        ];
        scan(index, panels, queries, &mut out);
        for (i, (got, query)) in out.iter().zip(queries).enumerate() {
            let bits = |list: &[Scored]| -> Vec<(u32, u32)> {
                list.iter().map(|s| (s.item, s.score.to_bits())).collect()
            };
            prop_assert_eq!(bits(got), bits(&reference(index, query)), "query {}", i);
        }
        Ok(true)
    }

    #[test]
    fn odd_sizes_give_the_exact_answers() -> Result<(), TestCaseError> {
        if !available() {
            eprintln!("this CPU has no AVX-512 BF16: the pass is not used here");
            return Ok(());
        }
        // One item, n beyond the catalogue, odd factor counts, a user who
        // rated all but 3 items, n of 0.
        for (items, k) in [(1, 5), (3, 1), (64, 2), (65, 7), (1682, 100), (700, 33)] {
            let index = ItemIndex::build(&model(items, k, 7));
            let rows = users(6, k, 3);
            let all_but_3: Vec<u32> = (3..items as u32).collect();
            let queries: Vec<Query<'_>> = rows
                .iter()
                .enumerate()
                .map(|(u, f)| Query {
                    factors: f,
                    n: [10, items + 5, 0, 100, 1, 3][u],
                    exclude: if u == 5 {
                        [&all_but_3, &[]]
                    } else {
                        [&[], &[]]
                    },
                })
                .collect();
            prop_assert!(check(&index, &queries)?);
        }
        Ok(())
    }

    #[test]
    fn ties_go_to_the_lower_index_as_in_the_reference() -> Result<(), TestCaseError> {
        // Items 0..40 all identical: every score ties.
        let mut m = model(1, 6, 1);
        m.item_bias = vec![0.25; 40];
        m.item_factors = m.item_factors.repeat(40);
        m.item_counts = vec![1; 40];
        let index = ItemIndex::build(&m);
        let rows = users(3, 6, 2);
        let queries: Vec<Query<'_>> = rows
            .iter()
            .map(|f| Query {
                factors: f,
                n: 7,
                exclude: [&[1, 5], &[2]],
            })
            .collect();
        check(&index, &queries)?;
        Ok(())
    }

    #[test]
    fn items_added_or_changed_after_the_build_are_scored_exactly() -> Result<(), TestCaseError> {
        let m = model(100, 9, 4);
        let mut index = ItemIndex::build(&m);
        let factors = [0.4f32; 9];
        index.set_item(3, 1.5, &factors);
        index.set_item(130, 2.0, &factors);
        index.set_item(131, f32::NEG_INFINITY, &[0.0; 9]);
        let rows = users(5, 9, 8);
        let queries: Vec<Query<'_>> = rows
            .iter()
            .map(|f| Query {
                factors: f,
                n: 10,
                exclude: [&[], &[]],
            })
            .collect();
        check(&index, &queries)?;
        Ok(())
    }

    proptest! {
        #[test]
        fn random_groups_give_the_exact_answers(
            items in 1usize..600,
            k in 1usize..40,
            n_users in 1usize..12,
            n in 0usize..30,
            seed in any::<u64>(),
        ) {
            let index = ItemIndex::build(&model(items, k, seed));
            let rows = users(n_users, k, seed.rotate_left(7));
            let seen: Vec<u32> = (0..items as u32).filter(|i| i % 3 == 0).collect();
            let queries: Vec<Query<'_>> = rows
                .iter()
                .enumerate()
                .map(|(u, f)| Query {
                    factors: f,
                    n: n + u,
                    exclude: [&seen[..seen.len() * u / n_users], &[]],
                })
                .collect();
            check(&index, &queries)?;
        }
    }
}
