//! Accuracy and ranking metrics over held-out ratings.
//!
//! Accuracy compares predicted with actual ratings (RMSE, MAE), exactly as
//! surprise's `accuracy` module does. Ranking asks the question the product
//! answers: of the `k` items we would recommend from the whole catalogue
//! (everything the user did not rate in training), how many did the user
//! rate highly (`>= 4`) in the held-out data? That gives precision@k,
//! recall@k and NDCG@k with binary relevance, averaged over users.

/// Root mean squared error of `(predicted, actual)` pairs; 0 for none.
pub fn rmse(pairs: &[(f32, f32)]) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    let sum: f64 = pairs.iter().map(|&(p, a)| f64::from(p - a).powi(2)).sum();
    (sum / pairs.len() as f64).sqrt()
}

/// Mean absolute error of `(predicted, actual)` pairs; 0 for none.
pub fn mae(pairs: &[(f32, f32)]) -> f64 {
    if pairs.is_empty() {
        return 0.0;
    }
    pairs
        .iter()
        .map(|&(p, a)| f64::from((p - a).abs()))
        .sum::<f64>()
        / pairs.len() as f64
}

/// Ranking quality of one user's top-k list.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RankingScores {
    /// Relevant items among the k recommended, over k.
    pub precision: f64,
    /// Relevant items among the k recommended, over all relevant held-out items.
    pub recall: f64,
    /// Discounted cumulative gain over the best achievable.
    pub ndcg: f64,
}

/// Scores a ranked list (`recommended`, best first, at most `k` long) against
/// the user's relevant held-out items (non-empty).
pub fn ranking_scores(recommended: &[u32], relevant: &[u32], k: usize) -> RankingScores {
    if relevant.is_empty() || k == 0 {
        return RankingScores::default();
    }
    let discount = |rank: usize| 1.0 / ((rank + 2) as f64).log2();
    let mut hits = 0usize;
    let mut dcg = 0.0;
    for (rank, item) in recommended.iter().take(k).enumerate() {
        if relevant.contains(item) {
            hits += 1;
            dcg += discount(rank);
        }
    }
    let ideal: f64 = (0..k.min(relevant.len())).map(discount).sum();
    RankingScores {
        precision: hits as f64 / k as f64,
        recall: hits as f64 / relevant.len() as f64,
        ndcg: dcg / ideal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_metrics_on_a_worked_example() {
        let pairs = [(3.0, 4.0), (5.0, 3.0), (2.0, 2.0)];
        assert!((rmse(&pairs) - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((mae(&pairs) - 1.0).abs() < 1e-12);
        assert_eq!(rmse(&[]), 0.0);
    }

    #[test]
    fn ranking_metrics_on_a_worked_example() {
        // Hits at ranks 1 and 3 of 4; 3 relevant items in all.
        let s = ranking_scores(&[10, 11, 12, 13], &[10, 12, 99], 4);
        assert_eq!(s.precision, 0.5);
        assert!((s.recall - 2.0 / 3.0).abs() < 1e-12);
        let dcg = 1.0 + 1.0 / 4f64.log2();
        let idcg = 1.0 + 1.0 / 3f64.log2() + 1.0 / 4f64.log2();
        assert!((s.ndcg - dcg / idcg).abs() < 1e-12);
    }

    #[test]
    fn a_perfect_list_scores_one() {
        let s = ranking_scores(&[1, 2], &[2, 1], 2);
        assert_eq!((s.precision, s.recall), (1.0, 1.0));
        assert!((s.ndcg - 1.0).abs() < 1e-12);
    }
}
