//! Readers for item files, giving each raw item id its movie title.
//!
//! Titles are only for people: recommendations carry them so a reply reads
//! "Kolya (1996)" rather than "242". The files are older than UTF-8 habits
//! (`u.item` and `movies.dat` are latin-1), so a line that is not valid UTF-8
//! is decoded as latin-1 instead of being rejected. RecBole keeps the year in
//! its own column; we put it back in the MovieLens form `Title (Year)`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{DataError, TitlesFormat};

/// Movie titles by raw item id.
pub type ItemTitles = HashMap<String, String>;

/// Reads an item file in any supported layout (sniffed from its first line).
pub fn read_titles(path: &Path) -> Result<ItemTitles, DataError> {
    let file = File::open(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_titles_from(BufReader::new(file), path)
}

/// Reads titles from any reader; `path` is only used in messages.
pub fn read_titles_from<R: Read>(
    mut reader: BufReader<R>,
    path: &Path,
) -> Result<ItemTitles, DataError> {
    let mut titles = ItemTitles::new();
    let mut buf = Vec::new();
    let mut layout: Option<TitleLayout> = None;
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| DataError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let decoded = decode_line(&buf);
        let text = decoded.trim_end_matches(['\n', '\r']);
        if text.trim().is_empty() {
            continue;
        }
        let bad_line = |reason: String| DataError::BadLine {
            path: path.to_path_buf(),
            line: line_no,
            reason,
        };
        if layout.is_none() {
            let format = TitlesFormat::sniff(text).ok_or_else(|| DataError::BadFile {
                path: path.to_path_buf(),
                reason: "cannot tell the item file format (expected u.item, movies.dat, movies.csv or a RecBole .item file)".into(),
            })?;
            let (first, is_header) =
                TitleLayout::from_first_line(format, text).map_err(bad_line)?;
            layout = Some(first);
            if is_header {
                continue;
            }
        }
        let Some(current) = layout.as_ref() else {
            continue;
        };
        let (id, title) = current.parse(text).map_err(bad_line)?;
        titles.insert(id, title);
    }
    Ok(titles)
}

/// UTF-8 when it is, latin-1 otherwise (every byte is a code point there).
fn decode_line(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        Err(_) => bytes
            .iter()
            .map(|&b| char::from(b))
            .collect::<String>()
            .into(),
    }
}

enum TitleLayout {
    /// `id<sep>title<sep>...`
    Split { separator: &'static str },
    /// CSV with quoting: `movieId,title,genres`.
    Csv,
    /// RecBole columns found from the header.
    Recbole {
        id: usize,
        title: usize,
        year: Option<usize>,
    },
}

impl TitleLayout {
    fn from_first_line(format: TitlesFormat, first: &str) -> Result<(TitleLayout, bool), String> {
        Ok(match format {
            TitlesFormat::UItem => (TitleLayout::Split { separator: "|" }, false),
            TitlesFormat::MoviesDat => (TitleLayout::Split { separator: "::" }, false),
            TitlesFormat::MoviesCsv => (TitleLayout::Csv, first.starts_with("movieId,")),
            TitlesFormat::Recbole => {
                let names: Vec<&str> = first
                    .split('\t')
                    .map(|c| c.split(':').next().unwrap_or(c))
                    .collect();
                let find = |name: &str| names.iter().position(|n| *n == name);
                let id = find("item_id").ok_or("RecBole item header has no item_id column")?;
                let title = find("movie_title")
                    .or_else(|| find("title"))
                    .ok_or("RecBole item header has no movie_title column")?;
                (
                    TitleLayout::Recbole {
                        id,
                        title,
                        year: find("release_year"),
                    },
                    true,
                )
            }
        })
    }

    fn parse(&self, line: &str) -> Result<(String, String), String> {
        match self {
            TitleLayout::Split { separator } => {
                let mut fields = line.split(separator);
                let id = fields.next().map(str::trim).unwrap_or_default();
                let title = fields.next().ok_or_else(|| {
                    format!("expected id{separator}title{separator}..., found no {separator:?}")
                })?;
                non_empty_id(id).map(|id| (id, title.trim().to_string()))
            }
            TitleLayout::Csv => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .from_reader(line.as_bytes());
                let record = reader
                    .records()
                    .next()
                    .ok_or("empty CSV record")?
                    .map_err(|e| format!("bad CSV: {e}"))?;
                let id = record.get(0).unwrap_or_default().trim();
                let title = record.get(1).ok_or("expected movieId,title,genres")?;
                non_empty_id(id).map(|id| (id, title.trim().to_string()))
            }
            TitleLayout::Recbole { id, title, year } => {
                let fields: Vec<&str> = line.split('\t').collect();
                let get = |at: usize| fields.get(at).map(|f| f.trim());
                let item = get(*id).ok_or("missing item_id column")?;
                let name = get(*title).ok_or("missing movie_title column")?;
                // RecBole's year column holds placeholders such as "unkonwn" too.
                let title = match year.and_then(get) {
                    Some(y) if !y.is_empty() && y.bytes().all(|b| b.is_ascii_digit()) => {
                        format!("{name} ({y})")
                    }
                    _ => name.to_string(),
                };
                non_empty_id(item).map(|id| (id, title))
            }
        }
    }
}

fn non_empty_id(id: &str) -> Result<String, String> {
    if id.is_empty() {
        Err("empty item id".into())
    } else {
        Ok(id.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<ItemTitles, DataError> {
        read_titles_from(BufReader::new(bytes), Path::new("items"))
    }

    #[test]
    fn reads_latin1_u_item() {
        let titles = read(b"242|Kolya (1996)|24-Jan-1997||http://x|0|0\n1412|Land Before Time III (1995)|x\n303|Ulee's Gold (1997)|x\n1|Mis\xe9rables, Les (1995)|x\n").unwrap();
        assert_eq!(titles["242"], "Kolya (1996)");
        assert_eq!(titles["1"], "Misérables, Les (1995)");
    }

    #[test]
    fn reads_movies_dat_and_quoted_movies_csv() {
        let dat = read(b"1::Toy Story (1995)::Animation|Children's|Comedy\n").unwrap();
        assert_eq!(dat["1"], "Toy Story (1995)");
        let csv = read(
            b"movieId,title,genres\n11,\"American President, The (1995)\",Comedy|Drama|Romance\n",
        )
        .unwrap();
        assert_eq!(csv["11"], "American President, The (1995)");
    }

    #[test]
    fn recbole_titles_get_their_year_back() {
        let text = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n242\tKolya\t1996\tComedy\n267\tunknown\t\t\n268\tunkonwn\tunkonwn\t\n";
        let titles = read(text.as_bytes()).unwrap();
        assert_eq!(titles["242"], "Kolya (1996)");
        assert_eq!(titles["267"], "unknown");
        assert_eq!(titles["268"], "unkonwn");
    }

    #[test]
    fn malformed_item_lines_name_the_line() {
        let err = read(b"1|Toy Story|x\n2\n").unwrap_err();
        assert!(
            err.to_string().starts_with("items:2: expected id|title"),
            "{err}"
        );
    }
}
