//! Readers for ratings files: `u.data`, `ratings.dat`, `ratings.csv` and RecBole `.inter`.
//!
//! All formats reduce to the same four fields per line (user, item, rating and
//! an optional timestamp), so one streaming loop reads the file line by line
//! and a small [`LineLayout`] knows where the fields are. A bad line stops the
//! read with its file and line number, or, with `skip_bad_lines`, is counted
//! and reported so nothing is dropped silently.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{DataError, Dataset, RatingsFormat};

/// How to read a ratings file.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// The file layout; `Auto` sniffs it from the first line.
    pub format: RatingsFormat,
    /// Count and skip malformed lines instead of failing on the first.
    pub skip_bad_lines: bool,
}

/// What a read found besides the ratings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadReport {
    /// The format used (the sniffed one when `Auto` was asked for).
    pub format: RatingsFormat,
    /// Lines read, header and blank lines included.
    pub lines: usize,
    /// Malformed lines skipped (only with `skip_bad_lines`).
    pub skipped: usize,
    /// The first few skipped lines as `line N: reason`, for the user to look at.
    pub skipped_examples: Vec<String>,
}

const SKIPPED_EXAMPLES: usize = 5;

/// Reads a ratings file into a [`Dataset`].
pub fn read_ratings(path: &Path, options: ReadOptions) -> Result<(Dataset, ReadReport), DataError> {
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    read_ratings_from(BufReader::with_capacity(1 << 20, file), path, options)
}

/// Reads ratings from any reader; `path` is only used in messages.
pub fn read_ratings_from<R: Read>(
    reader: BufReader<R>,
    path: &Path,
    options: ReadOptions,
) -> Result<(Dataset, ReadReport), DataError> {
    let mut reader = reader;
    let mut data = Dataset::default();
    let mut report = ReadReport::default();
    let mut layout: Option<LineLayout> = None;
    let mut buf = Vec::with_capacity(256);
    let bad_line = |line: usize, reason: String| DataError::BadLine {
        path: path.to_path_buf(),
        line,
        reason,
    };

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
        report.lines += 1;
        let line_no = report.lines;
        let text = match std::str::from_utf8(&buf) {
            Ok(t) => t.trim_end_matches(['\n', '\r']),
            Err(e) => {
                let reason = format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1);
                skip_or_fail(&mut report, options, line_no, reason)
                    .map_err(|r| bad_line(line_no, r))?;
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        if layout.is_none() {
            let format = match options.format {
                RatingsFormat::Auto => RatingsFormat::sniff(text).ok_or_else(|| DataError::BadFile {
                    path: path.to_path_buf(),
                    reason: format!(
                        "cannot tell the ratings format from the first line {:?}; pass --format",
                        truncate(text)
                    ),
                })?,
                f => f,
            };
            report.format = format;
            let (first_layout, is_header) = LineLayout::from_first_line(format, text)
                .map_err(|reason| bad_line(line_no, reason))?;
            layout = Some(first_layout);
            if is_header {
                continue;
            }
        }
        let Some(current) = layout.as_ref() else {
            continue;
        };
        match current.parse(text) {
            Ok(fields) => data.push(fields.user, fields.item, fields.rating, fields.timestamp),
            Err(reason) => skip_or_fail(&mut report, options, line_no, reason)
                .map_err(|r| bad_line(line_no, r))?,
        }
    }
    if data.is_empty() {
        return Err(DataError::BadFile {
            path: path.to_path_buf(),
            reason: "no ratings in the file".into(),
        });
    }
    Ok((data, report))
}

fn skip_or_fail(
    report: &mut ReadReport,
    options: ReadOptions,
    line: usize,
    reason: String,
) -> Result<(), String> {
    if !options.skip_bad_lines {
        return Err(reason);
    }
    report.skipped += 1;
    if report.skipped_examples.len() < SKIPPED_EXAMPLES {
        report
            .skipped_examples
            .push(format!("line {line}: {reason}"));
    }
    Ok(())
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The fields of one ratings line, borrowed from it.
#[derive(Debug, PartialEq)]
struct Fields<'a> {
    user: &'a str,
    item: &'a str,
    rating: f32,
    timestamp: Option<i64>,
}

/// Where the fields sit in a line of a given format.
#[derive(Debug, Clone)]
struct LineLayout {
    separator: &'static str,
    /// Column positions of user, item, rating and (optionally) timestamp.
    user: usize,
    item: usize,
    rating: usize,
    timestamp: Option<usize>,
    /// Number of columns every line must have.
    columns: ColumnCount,
    /// Text used in error messages to describe the expected line.
    expected: &'static str,
}

#[derive(Debug, Clone, Copy)]
enum ColumnCount {
    /// Exactly this many.
    Exactly(usize),
    /// Three (no timestamp) or four.
    ThreeOrFour,
}

impl LineLayout {
    /// Builds the layout for `format`, reading the header when the first line is
    /// one. Returns the layout and whether that line was a header.
    fn from_first_line(format: RatingsFormat, first: &str) -> Result<(LineLayout, bool), String> {
        let positional = |separator, expected| LineLayout {
            separator,
            user: 0,
            item: 1,
            rating: 2,
            timestamp: Some(3),
            columns: ColumnCount::ThreeOrFour,
            expected,
        };
        match format {
            RatingsFormat::Ml100k => Ok((
                positional("\t", "user<TAB>item<TAB>rating<TAB>timestamp"),
                false,
            )),
            RatingsFormat::Ml1m => Ok((positional("::", "user::item::rating::timestamp"), false)),
            RatingsFormat::Csv => {
                let layout = positional(",", "user,item,rating,timestamp");
                // A header names at least three columns, and the third is no number.
                let is_header = first
                    .split(',')
                    .nth(2)
                    .is_some_and(|rating| rating.trim().parse::<f32>().is_err());
                if is_header {
                    Ok((
                        Self::from_header(
                            first,
                            ",",
                            &["userid", "user_id", "user"],
                            &["movieid", "itemid", "item_id", "item"],
                        )?,
                        true,
                    ))
                } else {
                    Ok((layout, false))
                }
            }
            RatingsFormat::Recbole => Ok((
                Self::from_header(first, "\t", &["user_id"], &["item_id"])?,
                true,
            )),
            RatingsFormat::Auto => Err("format must be resolved before reading".into()),
        }
    }

    /// Finds the columns by name in a header line (names compared without any
    /// `:type` suffix and case-insensitively).
    fn from_header(
        header: &str,
        separator: &'static str,
        user_names: &[&str],
        item_names: &[&str],
    ) -> Result<LineLayout, String> {
        let names: Vec<String> = header
            .split(separator)
            .map(|c| c.split(':').next().unwrap_or(c).trim().to_ascii_lowercase())
            .collect();
        let find = |wanted: &[&str]| names.iter().position(|n| wanted.contains(&n.as_str()));
        let missing = |what: &str| format!("header {:?} has no {what} column", truncate(header));
        Ok(LineLayout {
            separator,
            user: find(user_names).ok_or_else(|| missing("user"))?,
            item: find(item_names).ok_or_else(|| missing("item"))?,
            rating: find(&["rating"]).ok_or_else(|| missing("rating"))?,
            timestamp: find(&["timestamp"]),
            columns: ColumnCount::Exactly(names.len()),
            expected: if separator == "," {
                "the columns of the header, comma-separated"
            } else {
                "the columns of the header, tab-separated"
            },
        })
    }

    fn parse<'a>(&self, line: &'a str) -> Result<Fields<'a>, String> {
        let mut columns: [&str; 16] = [""; 16];
        let mut count = 0;
        for field in line.split(self.separator) {
            if count < columns.len() {
                columns[count] = field;
            }
            count += 1;
        }
        let ok = match self.columns {
            ColumnCount::Exactly(n) => count == n,
            ColumnCount::ThreeOrFour => count == 3 || count == 4,
        };
        if !ok || count > columns.len() {
            return Err(format!(
                "expected {}, found {count} field{}",
                self.expected,
                if count == 1 { "" } else { "s" }
            ));
        }
        let id = |at: usize, what: &str| {
            let text = columns[at].trim();
            if text.is_empty() {
                Err(format!("empty {what} id"))
            } else {
                Ok(text)
            }
        };
        let user = id(self.user, "user")?;
        let item = id(self.item, "item")?;
        let rating_text = columns[self.rating].trim();
        let rating: f32 = rating_text
            .parse()
            .map_err(|_| format!("rating {rating_text:?} is not a number"))?;
        if !rating.is_finite() {
            return Err(format!("rating {rating_text:?} is not finite"));
        }
        let timestamp = match self.timestamp {
            Some(at) if at < count => {
                let text = columns[at].trim();
                Some(
                    parse_timestamp(text)
                        .ok_or_else(|| format!("timestamp {text:?} is not a number"))?,
                )
            }
            _ => None,
        };
        Ok(Fields {
            user,
            item,
            rating,
            timestamp,
        })
    }
}

/// Unix timestamps are integers, but RecBole types them as floats (`881250949.0`).
fn parse_timestamp(text: &str) -> Option<i64> {
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    let f: f64 = text.parse().ok()?;
    (f.is_finite() && f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read(text: &str, options: ReadOptions) -> Result<(Dataset, ReadReport), DataError> {
        read_ratings_from(
            BufReader::new(text.as_bytes()),
            Path::new("test.data"),
            options,
        )
    }

    fn auto() -> ReadOptions {
        ReadOptions::default()
    }

    #[test]
    fn reads_u_data_with_crlf_and_blank_lines() {
        let (data, report) = read(
            "196\t242\t3\t881250949\r\n\n186\t302\t3\t891717742\n",
            auto(),
        )
        .unwrap();
        assert_eq!(report.format, RatingsFormat::Ml100k);
        assert_eq!(data.len(), 2);
        assert_eq!(data.users.ids()[0].as_str(), "196");
        assert_eq!(data.items.ids()[1].as_str(), "302");
        assert_eq!(data.timestamps, vec![881250949, 891717742]);
    }

    #[test]
    fn reads_ratings_dat_separated_by_double_colons() {
        let (data, report) = read("1::1193::5::978300760\n1::661::3::978302109\n", auto()).unwrap();
        assert_eq!(report.format, RatingsFormat::Ml1m);
        assert_eq!(data.ratings[1].value, 3.0);
        assert_eq!(data.users.len(), 1);
    }

    #[test]
    fn reads_ratings_csv_with_header_and_half_stars() {
        let text = "userId,movieId,rating,timestamp\n1,307,3.5,1256677221\n1,481,0.5,1256677456\n";
        let (data, report) = read(text, auto()).unwrap();
        assert_eq!(report.format, RatingsFormat::Csv);
        assert_eq!(
            data.ratings.iter().map(|r| r.value).collect::<Vec<_>>(),
            vec![3.5, 0.5]
        );
        assert_eq!(data.observed_scale().unwrap().min, 0.5);
    }

    #[test]
    fn reads_headerless_csv_positionally() {
        let (data, _) = read("7,8,4\n7,9,2\n", auto()).unwrap();
        assert_eq!(data.len(), 2);
        assert!(!data.has_timestamps());
    }

    #[test]
    fn csv_header_columns_may_come_in_any_order() {
        let text = "timestamp,rating,movieId,userId\n5,4.0,10,1\n";
        let (data, _) = read(text, auto()).unwrap();
        assert_eq!(data.users.ids()[0].as_str(), "1");
        assert_eq!(data.items.ids()[0].as_str(), "10");
        assert_eq!(data.timestamps, vec![5]);
    }

    #[test]
    fn reads_recbole_inter_with_typed_header_and_float_timestamps() {
        let text = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n196\t242\t3\t881250949.0\n";
        let (data, report) = read(text, auto()).unwrap();
        assert_eq!(report.format, RatingsFormat::Recbole);
        assert_eq!(data.timestamps, vec![881250949]);
    }

    #[test]
    fn keeps_string_ids_as_written() {
        let (data, _) = read("u-007\ttt0114709\t4\t1\n", auto()).unwrap();
        assert_eq!(data.users.ids()[0].as_str(), "u-007");
        assert_eq!(data.items.ids()[0].as_str(), "tt0114709");
    }

    #[test]
    fn a_bad_line_is_an_error_naming_file_line_and_reason() {
        let err = read(
            "196\t242\t3\t881250949\n186\t302\tthree\t891717742\n",
            auto(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.data:2: rating \"three\" is not a number"
        );
        let err = read("196\t242\t3\t881250949\n186\t302\n", auto()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "test.data:2: expected user<TAB>item<TAB>rating<TAB>timestamp, found 2 fields"
        );
        let err = read("1\t2\tNaN\t3\n", auto()).unwrap_err();
        assert!(err.to_string().contains("not finite"), "{err}");
        let err = read("1\t\t3\t3\n", auto()).unwrap_err();
        assert_eq!(err.to_string(), "test.data:1: empty item id");
    }

    #[test]
    fn invalid_utf8_is_reported_not_panicked_on() {
        let bytes = b"1\t2\t3\t4\n\xff\xfe\t2\t3\t4\n";
        let err =
            read_ratings_from(BufReader::new(&bytes[..]), Path::new("x"), auto()).unwrap_err();
        assert!(err.to_string().starts_with("x:2: not valid UTF-8"), "{err}");
    }

    #[test]
    fn skip_bad_lines_counts_and_reports_them() {
        let options = ReadOptions {
            skip_bad_lines: true,
            ..auto()
        };
        let (data, report) = read("1\t2\t3\t4\nbroken\n1\t3\tx\t4\n2\t2\t5\t4\n", options).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(report.skipped, 2);
        assert_eq!(
            report.skipped_examples[0],
            "line 2: expected user<TAB>item<TAB>rating<TAB>timestamp, found 1 field"
        );
    }

    #[test]
    fn unknown_layout_and_empty_files_are_clear_errors() {
        let err = read("1 2 3 4\n", auto()).unwrap_err();
        assert!(
            err.to_string().contains("cannot tell the ratings format"),
            "{err}"
        );
        let err = read("\n\n", auto()).unwrap_err();
        assert_eq!(err.to_string(), "test.data: no ratings in the file");
        let err = read("user_id:token\trating:float\n", auto()).unwrap_err();
        assert!(err.to_string().contains("has no item column"), "{err}");
    }

    #[test]
    fn explicit_format_overrides_sniffing() {
        let options = ReadOptions {
            format: RatingsFormat::Csv,
            ..auto()
        };
        let err = read("1\t2\t3\t4\n", options).unwrap_err();
        assert!(err.to_string().contains("found 1 field"), "{err}");
    }

    proptest! {
        #[test]
        fn u_data_lines_round_trip(rows in proptest::collection::vec((0u32..500, 0u32..900, 1u8..=5, 0i64..2_000_000_000), 1..50)) {
            let text: String = rows.iter().map(|(u, i, r, t)| format!("{u}\t{i}\t{r}\t{t}\n")).collect();
            let (data, _) = read(&text, auto()).unwrap();
            prop_assert_eq!(data.len(), rows.len());
            for (rating, (u, i, r, _)) in data.ratings.iter().zip(&rows) {
                prop_assert_eq!(data.users.raw(rating.user).unwrap().as_str(), u.to_string());
                prop_assert_eq!(data.items.raw(rating.item).unwrap().as_str(), i.to_string());
                prop_assert_eq!(rating.value, f32::from(*r));
            }
            prop_assert_eq!(data.timestamps, rows.iter().map(|r| r.3).collect::<Vec<_>>());
        }

        #[test]
        fn arbitrary_lines_never_panic(text in "\\PC{0,200}") {
            let _ = read(&text, auto());
            let _ = read(&text, ReadOptions { skip_bad_lines: true, ..auto() });
        }
    }
}
