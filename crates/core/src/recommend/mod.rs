//! Recommendations for a raw user id: the answer the CLI prints and the stream replies with.
//!
//! A [`Recommender`] wraps a [`Model`] with what serving needs precomputed:
//! the transposed item factors for fast scoring and the cold-start list. A
//! known user gets the `n` best-scoring items they have not rated; an unknown
//! user gets the most popular well-rated items (what the model itself
//! predicts for someone it knows nothing about: `mu + b_i`, among items with
//! at least the median number of ratings), flagged `cold_start`. The
//! streaming worker takes the answers as JSON bytes instead ([`Recommender::answer_many_json`]),
//! which skips building owned strings per recommended item.

mod json;

use serde::Serialize;

use crate::ids::RawId;
use crate::model::Model;
use crate::topn::{ItemIndex, Query, Scored};

use json::ItemJson;
pub use json::{JsonAnswer, JsonAnswers};

/// The most items one request may ask for.
pub const MAX_N: usize = 100;

/// One recommended item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// Item id as in the ratings file (a JSON number when it is an integer).
    pub iid: RawId,
    /// Title, empty when the model was trained without an item file.
    pub title: String,
    /// Predicted rating, clipped to the rating scale, rounded to 4 decimals.
    #[serde(serialize_with = "four_decimals")]
    pub score: f32,
}

/// The answer for one user.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendations {
    /// The user id as asked for.
    pub uid: RawId,
    /// Best first.
    pub recommendations: Vec<Recommendation>,
    /// True when the user is unknown and got the popular list.
    pub cold_start: bool,
    /// Identifies the model that answered.
    pub model_version: String,
}

/// Reusable buffers, so the hot path does not allocate per request.
#[derive(Debug, Default)]
pub struct Scratch {
    /// One best-n list per request of a group.
    best: Vec<Vec<Scored>>,
    /// The dense index of each request's user, when known.
    users: Vec<Option<u32>>,
}

/// What a request gets, before it is written out.
enum Answer<'a> {
    /// A known user and their best items (unclipped scores, before `mu + b_u`).
    Known { user: u32, best: &'a [Scored] },
    /// An unknown user: the popular list.
    Cold,
}

/// A model ready to answer requests.
#[derive(Debug, Clone)]
pub struct Recommender {
    model: Model,
    index: ItemIndex,
    popular: Vec<u32>,
    version: String,
    item_json: ItemJson,
}

impl Recommender {
    /// Prepares `model` for serving.
    pub fn new(model: Model) -> Self {
        let index = ItemIndex::build(&model.svd);
        let popular = cold_start_ranking(&model);
        let version = model.version();
        let item_json = ItemJson::build(&model);
        Recommender {
            model,
            index,
            popular,
            version,
            item_json,
        }
    }

    /// The same recommender scoring only with the exact kernels, never the
    /// bf16 candidate pass (whose answers are the same; for benchmarks).
    pub fn without_bf16(mut self) -> Self {
        self.index = self.index.without_bf16();
        self
    }

    /// True when grouped scoring goes through the bf16 candidate pass
    /// (CPUs with AVX-512 BF16).
    pub fn uses_bf16(&self) -> bool {
        self.index.uses_bf16()
    }

    /// The underlying model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Mutable access for online updates; callers must keep the scoring
    /// index in step with item changes (see [`Recommender::refresh_item`]).
    pub(crate) fn model_mut(&mut self) -> &mut Model {
        &mut self.model
    }

    /// Copies an item's bias and factors from the model into the scoring
    /// index (unknown items, with no ratings, stay unrecommendable).
    pub(crate) fn refresh_item(&mut self, item: u32) {
        let svd = &self.model.svd;
        let bias = if svd.knows_item(item) {
            svd.item_bias[item as usize]
        } else {
            f32::NEG_INFINITY
        };
        self.index.set_item(item, bias, svd.item_row(item));
        self.item_json.extend_to(&self.model);
    }

    /// The version string replies carry.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Sets the version string replies carry (e.g. model id plus update sequence).
    pub fn set_version(&mut self, version: String) {
        self.version = version;
    }

    /// The top `n` (at most [`MAX_N`]) items for a raw user id.
    pub fn recommend(&self, uid: &str, n: usize) -> Recommendations {
        self.recommend_with(uid, n, &mut Scratch::default())
    }

    /// As [`Recommender::recommend`], reusing `scratch` between calls.
    pub fn recommend_with(&self, uid: &str, n: usize, scratch: &mut Scratch) -> Recommendations {
        match self.known_user(uid) {
            Some(u) => {
                if scratch.best.is_empty() {
                    scratch.best.push(Vec::new());
                }
                let best = &mut scratch.best[..1];
                self.index.top_n_many(&[self.query(u, n)], best);
                let answer = Answer::Known {
                    user: u,
                    best: &best[0],
                };
                self.owned_answer(uid, n, &answer)
            }
            None => self.owned_answer(uid, n, &Answer::Cold),
        }
    }

    /// Answers several `(uid, n)` requests at once, in order. Known users
    /// are scored together, in one pass over the item factors for the whole
    /// group (see [`ItemIndex::top_n_many`]); the answers are the same as
    /// one at a time.
    pub fn recommend_many(
        &self,
        requests: &[(&str, usize)],
        scratch: &mut Scratch,
    ) -> Vec<Recommendations> {
        let mut answers = Vec::with_capacity(requests.len());
        self.each_answer(requests, scratch, |uid, n, answer| {
            answers.push(self.owned_answer(uid, n, &answer));
        });
        answers
    }

    /// As [`Recommender::recommend_many`], but each answer's
    /// `recommendations` array is written as JSON into `out` (cleared
    /// first), byte for byte what serialising [`Recommendations`] writes
    /// for it, without building a [`Recommendation`] per item.
    pub fn answer_many_json(
        &self,
        requests: &[(&str, usize)],
        scratch: &mut Scratch,
        out: &mut JsonAnswers,
    ) {
        out.clear();
        self.each_answer(requests, scratch, |_, n, answer| {
            out.push(matches!(answer, Answer::Cold), |items| {
                self.each_item(&answer, n, |item, score| {
                    items.item(&self.item_json, &self.model, item, score);
                });
            });
        });
    }

    /// Scores the known users among `requests` together, then calls
    /// `each(uid, n, answer)` for every request, in order.
    fn each_answer(
        &self,
        requests: &[(&str, usize)],
        scratch: &mut Scratch,
        mut each: impl FnMut(&str, usize, Answer<'_>),
    ) {
        scratch.users.clear();
        scratch
            .users
            .extend(requests.iter().map(|(uid, _)| self.known_user(uid)));
        let queries: Vec<Query<'_>> = scratch
            .users
            .iter()
            .zip(requests)
            .filter_map(|(u, &(_, n))| u.map(|u| self.query(u, n)))
            .collect();
        if scratch.best.len() < queries.len() {
            scratch.best.resize_with(queries.len(), Vec::new);
        }
        let lists = &mut scratch.best[..queries.len()];
        self.index.top_n_many(&queries, lists);
        let mut lists = lists.iter();
        for (u, &(uid, n)) in scratch.users.iter().zip(requests) {
            match u.and_then(|u| Some((u, lists.next()?))) {
                Some((user, best)) => each(uid, n, Answer::Known { user, best }),
                None => each(uid, n, Answer::Cold),
            }
        }
    }

    /// The top-N question for known user `u`: their factors, `n` capped at
    /// [`MAX_N`], and the items they rated.
    fn query(&self, u: u32, n: usize) -> Query<'_> {
        let seen = &self.model.seen;
        Query {
            factors: self.model.svd.user_row(u),
            n: n.min(MAX_N),
            exclude: [seen.base_row(u), seen.added_row(u)],
        }
    }

    fn known_user(&self, uid: &str) -> Option<u32> {
        self.model
            .users
            .get(uid)
            .filter(|&u| self.model.svd.knows_user(u))
    }

    /// Calls `f(item, estimate)` for each item of `answer`, best first: a
    /// known user's best items, or the first `n` (at most [`MAX_N`]) popular
    /// ones, each estimate clipped to the rating scale.
    fn each_item(&self, answer: &Answer<'_>, n: usize, mut f: impl FnMut(u32, f32)) {
        let svd = &self.model.svd;
        match answer {
            Answer::Known { user, best } => {
                let offset = svd.global_mean + svd.user_bias[*user as usize];
                for s in *best {
                    f(s.item, svd.scale.clip(offset + s.score));
                }
            }
            Answer::Cold => {
                for &i in self.popular.iter().take(n.min(MAX_N)) {
                    f(
                        i,
                        svd.scale.clip(svd.global_mean + svd.item_bias[i as usize]),
                    );
                }
            }
        }
    }

    /// `answer` to `uid`'s request for `n` items, as owned values.
    fn owned_answer(&self, uid: &str, n: usize, answer: &Answer<'_>) -> Recommendations {
        let mut recommendations = Vec::new();
        self.each_item(answer, n, |item, score| {
            recommendations.push(self.item(item, score));
        });
        Recommendations {
            uid: RawId::new(uid),
            recommendations,
            cold_start: matches!(answer, Answer::Cold),
            model_version: self.version.clone(),
        }
    }

    /// One recommended item with its (already clipped) score.
    fn item(&self, item: u32, score: f32) -> Recommendation {
        Recommendation {
            iid: self
                .model
                .items
                .raw(item)
                .cloned()
                .unwrap_or_else(|| RawId::new("")),
            title: self
                .model
                .titles
                .get(item as usize)
                .cloned()
                .unwrap_or_default(),
            score,
        }
    }
}

/// Items with at least the median rating count, best `mu + b_i` first.
fn cold_start_ranking(model: &Model) -> Vec<u32> {
    let svd = &model.svd;
    let mut counts: Vec<u32> = svd.item_counts.iter().copied().filter(|&c| c > 0).collect();
    if counts.is_empty() {
        return Vec::new();
    }
    counts.sort_unstable();
    let median = counts[counts.len() / 2];
    let mut candidates: Vec<u32> = (0..svd.n_items() as u32)
        .filter(|&i| svd.item_counts[i as usize] >= median.max(1))
        .collect();
    candidates.sort_by(|&a, &b| {
        svd.item_bias[b as usize]
            .total_cmp(&svd.item_bias[a as usize])
            .then(a.cmp(&b))
    });
    candidates.truncate(MAX_N);
    candidates
}

fn four_decimals<S: serde::Serializer>(score: &f32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(round4(*score))
}

/// A score as replies carry it: rounded to four decimals.
fn round4(score: f32) -> f64 {
    (f64::from(score) * 1e4).round() / 1e4
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;
    use crate::model::FitConfig;
    use crate::svd::Hyperparams;

    fn tiny_model() -> Model {
        let mut data = Dataset::default();
        let rows = [
            ("196", "242", 3.0),
            ("196", "302", 4.0),
            ("186", "302", 5.0),
            ("186", "377", 1.0),
            ("22", "377", 2.0),
            ("22", "51", 5.0),
            ("22", "242", 4.0),
            ("7", "51", 4.0),
        ];
        for (u, i, r) in rows {
            data.push(u, i, r, None);
        }
        let titles = [
            ("242", "Kolya (1996)"),
            ("51", "Legends of the Fall (1994)"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let config = FitConfig {
            params: Hyperparams {
                n_factors: 4,
                n_epochs: 30,
                ..Hyperparams::with_seed(1)
            },
            threads: 1,
            scale: None,
            titles: Some(&titles),
            source: "tiny".into(),
        };
        let mut model = Model::fit(&data, &config, &mut |_| {}).unwrap();
        model.id = "test".into();
        model
    }

    #[test]
    fn known_users_never_get_items_they_rated() {
        let rec = Recommender::new(tiny_model());
        let out = rec.recommend("196", 10);
        assert!(!out.cold_start);
        let iids: Vec<&str> = out.recommendations.iter().map(|r| r.iid.as_str()).collect();
        assert_eq!(
            iids.len(),
            2,
            "two of the four items are unrated by 196: {iids:?}"
        );
        assert!(!iids.contains(&"242") && !iids.contains(&"302"));
        assert!(
            out.recommendations
                .windows(2)
                .all(|w| w[0].score >= w[1].score)
        );
        assert_eq!(out.model_version, "test");
    }

    #[test]
    fn scores_are_the_model_estimates() {
        let rec = Recommender::new(tiny_model());
        let model = rec.model();
        let out = rec.recommend("196", 10);
        for r in &out.recommendations {
            let u = model.users.get("196");
            let i = model.items.get(r.iid.as_str());
            assert!((r.score - model.svd.predict(u, i)).abs() < 1e-5);
        }
    }

    #[test]
    fn unknown_users_get_the_popular_list_marked_cold_start() {
        let rec = Recommender::new(tiny_model());
        let out = rec.recommend("nobody", 3);
        assert!(out.cold_start);
        assert!(!out.recommendations.is_empty() && out.recommendations.len() <= 3);
        assert!(
            out.recommendations
                .windows(2)
                .all(|w| w[0].score >= w[1].score)
        );
    }

    #[test]
    fn json_shape_matches_the_wire_contract() {
        let rec = Recommender::new(tiny_model());
        let json = serde_json::to_value(rec.recommend("22", 1)).unwrap();
        assert_eq!(json["uid"], serde_json::json!(22));
        assert_eq!(json["cold_start"], serde_json::json!(false));
        let first = &json["recommendations"][0];
        assert_eq!(first["iid"], serde_json::json!(302));
        assert_eq!(first["title"], serde_json::json!(""));
        let score = first["score"].as_f64().unwrap();
        assert_eq!(score, (score * 1e4).round() / 1e4);
    }

    #[test]
    fn answering_many_at_once_gives_the_same_answers_in_order() {
        let rec = Recommender::new(tiny_model());
        let requests: Vec<(&str, usize)> = vec![
            ("196", 2),
            ("nobody", 3),
            ("22", 1),
            ("7", 5),
            ("186", 4),
            ("196", 1),
            ("x", 1),
            ("22", 2),
            ("7", 1),
            ("186", 2),
        ];
        let mut scratch = Scratch::default();
        let many = rec.recommend_many(&requests, &mut scratch);
        assert_eq!(many.len(), requests.len());
        for (answer, (uid, n)) in many.iter().zip(&requests) {
            assert_eq!(answer, &rec.recommend(uid, *n), "{uid}");
        }
    }

    /// Today's exact one-user path: the whole score vector, then selection.
    fn one_at_a_time(rec: &Recommender, uid: &str, n: usize) -> Recommendations {
        let Some(u) = rec.known_user(uid) else {
            return rec.owned_answer(uid, n, &Answer::Cold);
        };
        let (mut scores, mut best) = (Vec::new(), Vec::new());
        rec.index.score_into(rec.model.svd.user_row(u), &mut scores);
        let seen = &rec.model.seen;
        crate::topn::select_top_n(
            &mut scores,
            n.min(MAX_N),
            &[seen.base_row(u), seen.added_row(u)],
            &mut best,
        );
        rec.owned_answer(
            uid,
            n,
            &Answer::Known {
                user: u,
                best: &best,
            },
        )
    }

    #[test]
    fn grouped_answers_equal_the_one_user_path_exactly() {
        for (items, factors) in [(1682, 100), (3000, 37), (5, 3)] {
            let mut model = crate::synth::random_model(150, items, factors, 60, 4);
            // Some users also rated items since training.
            for u in (0..150).step_by(7) {
                model.seen.set_added_row(u, vec![1, 2, u % items as u32]);
            }
            let rec = Recommender::new(model);
            let ids: Vec<String> = (1..=150)
                .map(|u| u.to_string())
                .chain(["stranger".to_string()])
                .collect();
            let requests: Vec<(&str, usize)> = ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), [10, 1, 0, 100, 7][i % 5]))
                .collect();
            let expected: Vec<Recommendations> = requests
                .iter()
                .map(|&(uid, n)| one_at_a_time(&rec, uid, n))
                .collect();
            let mut scratch = Scratch::default();
            for group in [1, 8, 32, 128, 151] {
                let mut answers = Vec::new();
                for chunk in requests.chunks(group) {
                    answers.extend(rec.recommend_many(chunk, &mut scratch));
                }
                assert_eq!(answers, expected, "{items} items, groups of {group}");
            }
            for (&(uid, n), want) in requests.iter().zip(&expected) {
                assert_eq!(&rec.recommend_with(uid, n, &mut scratch), want);
            }
        }
    }

    /// The bytes a worker replies with must be exactly what serialising the
    /// owned answers writes: ids as numbers or strings, escaped titles,
    /// rounded and clipped scores, cold starts, n of 0, items added online.
    #[test]
    fn json_answers_are_the_serialised_recommendations_byte_for_byte() {
        let mut model = crate::synth::random_model(40, 300, 8, 20, 5);
        for (i, title) in model.titles.iter_mut().enumerate() {
            *title = [
                "",
                "Kolya (1996)",
                "a \"quoted\" \\ title",
                "Amélie\n\t\u{1}",
                "tt",
            ][i % 5]
                .into();
        }
        let mut rec = Recommender::new(model);
        // An item added while serving: a placeholder first, then its state.
        let state = crate::online::EntityState {
            id: RawId::new("new \"movie\""),
            bias: 2.0,
            factors: vec![0.5; 8],
            count: 3,
        };
        let user = crate::online::EntityState {
            id: RawId::new("7"),
            bias: 0.1,
            factors: vec![0.3; 8],
            count: 9,
        };
        rec.apply_user(&user, &[RawId::new("007"), RawId::new("1")]);
        rec.apply_item(&state);
        let ids: Vec<String> = (0..45).map(|u| u.to_string()).chain(["x".into()]).collect();
        let requests: Vec<(&str, usize)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), [10, 0, 1, 100, 3][i % 5]))
            .collect();
        let (mut scratch, mut json) = (Scratch::default(), JsonAnswers::default());
        let mut written = String::new();
        for group in [1, 7, 46] {
            for chunk in requests.chunks(group) {
                let owned = rec.recommend_many(chunk, &mut scratch);
                rec.answer_many_json(chunk, &mut scratch, &mut json);
                assert_eq!(json.len(), owned.len());
                for (i, want) in owned.iter().enumerate() {
                    let got = json.get(i).unwrap();
                    assert_eq!(
                        std::str::from_utf8(got.recommendations).unwrap(),
                        serde_json::to_string(&want.recommendations).unwrap()
                    );
                    assert_eq!(got.cold_start, want.cold_start);
                    written.push_str(std::str::from_utf8(got.recommendations).unwrap());
                }
            }
        }
        assert!(json.get(usize::MAX).is_none());
        let premises = [r#""iid":"new \"movie\"""#, r#"a \"quoted\" \\ title"#];
        for premise in premises {
            assert!(written.contains(premise), "{premise} is among the answers");
        }
    }

    #[test]
    fn n_is_capped() {
        let rec = Recommender::new(tiny_model());
        assert!(rec.recommend("7", 10_000).recommendations.len() <= MAX_N);
        assert!(rec.recommend("7", 0).recommendations.is_empty());
    }
}
