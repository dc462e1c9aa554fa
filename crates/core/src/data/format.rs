//! The file formats we read, and how `auto` tells them apart from the first line.
//!
//! MovieLens has shipped its ratings in four shapes over the years, and RecBole
//! repackages them in a fifth; people point us at whichever they have. Sniffing
//! looks only at the first non-empty line, so it is cheap and predictable, and
//! when it cannot decide it says so instead of guessing.

use std::fmt;
use std::str::FromStr;

/// Layout of a ratings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RatingsFormat {
    /// Decide from the first line.
    #[default]
    Auto,
    /// MovieLens 100K `u.data`: `user<TAB>item<TAB>rating<TAB>timestamp`, no header.
    Ml100k,
    /// MovieLens 1M/10M `ratings.dat`: `user::item::rating::timestamp`.
    Ml1m,
    /// ml-latest / ML-20M / ML-25M `ratings.csv`: comma-separated, optional header.
    Csv,
    /// RecBole atomic `.inter` file: tab-separated with a typed header (`user_id:token`...).
    Recbole,
}

/// Layout of an item (movie title) file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TitlesFormat {
    /// MovieLens 100K `u.item`: `id|title|date|...`, latin-1.
    UItem,
    /// MovieLens 1M/10M `movies.dat`: `id::title::genres`.
    MoviesDat,
    /// ml-latest / ML-20M / ML-25M `movies.csv`: `movieId,title,genres` with CSV quoting.
    MoviesCsv,
    /// RecBole `.item`: typed header with `item_id`, `movie_title` and `release_year`.
    Recbole,
}

impl RatingsFormat {
    /// The concrete format a first line suggests, or `None` when it is ambiguous.
    pub fn sniff(first_line: &str) -> Option<RatingsFormat> {
        let line = first_line.trim_end_matches(['\r', '\n']);
        if is_typed_header(line) {
            Some(RatingsFormat::Recbole)
        } else if line.contains("::") {
            Some(RatingsFormat::Ml1m)
        } else if line.contains('\t') {
            Some(RatingsFormat::Ml100k)
        } else if line.contains(',') {
            Some(RatingsFormat::Csv)
        } else {
            None
        }
    }
}

impl TitlesFormat {
    /// The format a first line suggests, or `None` when it is ambiguous.
    pub fn sniff(first_line: &str) -> Option<TitlesFormat> {
        let line = first_line.trim_end_matches(['\r', '\n']);
        if is_typed_header(line) {
            return Some(TitlesFormat::Recbole);
        }
        if line.starts_with("movieId,") {
            return Some(TitlesFormat::MoviesCsv);
        }
        // Titles and genres contain every separator, so only the one right
        // after the id counts.
        match line.find(['|', ',', ':'])? {
            at if line[at..].starts_with("::") => Some(TitlesFormat::MoviesDat),
            at if line[at..].starts_with('|') => Some(TitlesFormat::UItem),
            at if line[at..].starts_with(',') => Some(TitlesFormat::MoviesCsv),
            _ => None,
        }
    }
}

/// RecBole headers name every column `name:type`, e.g. `user_id:token`.
fn is_typed_header(line: &str) -> bool {
    const TYPES: [&str; 4] = [":token", ":float", ":token_seq", ":float_seq"];
    let mut columns = line.split('\t');
    columns
        .next()
        .is_some_and(|c| TYPES.iter().any(|t| c.ends_with(t)))
}

impl FromStr for RatingsFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(RatingsFormat::Auto),
            "ml100k" | "ml-100k" | "udata" => Ok(RatingsFormat::Ml100k),
            "ml1m" | "ml-1m" | "dat" => Ok(RatingsFormat::Ml1m),
            "csv" => Ok(RatingsFormat::Csv),
            "recbole" | "inter" => Ok(RatingsFormat::Recbole),
            other => Err(format!(
                "unknown ratings format {other:?} (expected auto, ml100k, ml1m, csv or recbole)"
            )),
        }
    }
}

impl fmt::Display for RatingsFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RatingsFormat::Auto => "auto",
            RatingsFormat::Ml100k => "ml100k",
            RatingsFormat::Ml1m => "ml1m",
            RatingsFormat::Csv => "csv",
            RatingsFormat::Recbole => "recbole",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_each_ratings_layout_from_its_first_line() {
        let cases = [
            ("196\t242\t3\t881250949\n", Some(RatingsFormat::Ml100k)),
            ("1::1193::5::978300760\r\n", Some(RatingsFormat::Ml1m)),
            ("userId,movieId,rating,timestamp", Some(RatingsFormat::Csv)),
            ("1,307,3.5,1256677221", Some(RatingsFormat::Csv)),
            (
                "user_id:token\titem_id:token\trating:float\ttimestamp:float",
                Some(RatingsFormat::Recbole),
            ),
            ("196 242 3 881250949", None),
        ];
        for (line, expected) in cases {
            assert_eq!(RatingsFormat::sniff(line), expected, "{line:?}");
        }
    }

    #[test]
    fn sniffs_each_titles_layout_from_its_first_line() {
        let cases = [
            (
                "1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/|0|0|0|1",
                Some(TitlesFormat::UItem),
            ),
            (
                "1::Toy Story (1995)::Animation|Children's|Comedy",
                Some(TitlesFormat::MoviesDat),
            ),
            ("movieId,title,genres", Some(TitlesFormat::MoviesCsv)),
            (
                "1,Toy Story (1995),Adventure|Animation",
                Some(TitlesFormat::MoviesCsv),
            ),
            (
                "1::Toy Story (1995)::Animation|Comedy",
                Some(TitlesFormat::MoviesDat),
            ),
            (
                "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
                Some(TitlesFormat::Recbole),
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(TitlesFormat::sniff(line), expected, "{line:?}");
        }
    }

    #[test]
    fn parses_format_names_case_insensitively() {
        assert_eq!("ML100K".parse::<RatingsFormat>(), Ok(RatingsFormat::Ml100k));
        assert_eq!(
            "recbole".parse::<RatingsFormat>(),
            Ok(RatingsFormat::Recbole)
        );
        assert!("parquet".parse::<RatingsFormat>().is_err());
    }
}
