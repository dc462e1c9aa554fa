//! Readers for ratings files: `u.data`, `ratings.dat`, `ratings.csv` and RecBole `.inter`.
//!
//! All formats reduce to the same four fields per line (user, item, rating and
//! an optional timestamp), so one streaming loop reads the file line by line
//! and a small `LineLayout` knows where the fields are. A bad line stops the
//! read with its file and line number, or, with `skip_bad_lines`, is counted
//! and reported so nothing is dropped silently.

use std::fs::File;
use std::io::Read;
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
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    read_ratings_from(file, size, path, options)
}

/// Reads ratings from any reader; `size_hint` (bytes, 0 if unknown) sizes the
/// buffers and `path` is only used in messages.
pub fn read_ratings_from<R: Read>(
    reader: R,
    size_hint: u64,
    path: &Path,
    options: ReadOptions,
) -> Result<(Dataset, ReadReport), DataError> {
    let mut lines = LineReader::new(reader);
    let mut data = Dataset::default();
    // MovieLens lines are 15 to 30 bytes; over-reserving a little beats regrowing.
    let expected = usize::try_from(size_hint / 18).unwrap_or(0).min(1 << 28);
    data.ratings.reserve(expected);
    data.timestamps.reserve(expected);
    let mut report = ReadReport::default();
    let mut layout: Option<LineLayout> = None;
    let io_error = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bad_line = |line: usize, reason: String| DataError::BadLine {
        path: path.to_path_buf(),
        line,
        reason,
    };

    while let Some(line) = lines.next_line().map_err(io_error)? {
        report.lines += 1;
        let line_no = report.lines;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if layout.is_none() {
            let text = std::str::from_utf8(line).map_err(|e| {
                bad_line(
                    line_no,
                    format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1),
                )
            })?;
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
        match current.parse(line).and_then(|fields| {
            let user = data
                .users
                .intern_bytes(fields.user)
                .map_err(|e| utf8_reason("user", &e))?;
            let item = data
                .items
                .intern_bytes(fields.item)
                .map_err(|e| utf8_reason("item", &e))?;
            Ok((user, item, fields))
        }) {
            Ok((user, item, fields)) => {
                data.push_indexed(user, item, fields.rating, fields.timestamp)
            }
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
    data.ratings.shrink_to_fit();
    data.timestamps.shrink_to_fit();
    Ok((data, report))
}

/// Hands out the lines of a reader (without their `\n` or `\r\n`) from a
/// large reused buffer: no allocation or copy per line, which matters for
/// the 25 million lines of ML-25M.
struct LineReader<R> {
    reader: R,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
}

impl<R: Read> LineReader<R> {
    const CHUNK: usize = 1 << 20;

    fn new(reader: R) -> Self {
        LineReader {
            reader,
            buf: vec![0; Self::CHUNK],
            start: 0,
            end: 0,
            eof: false,
        }
    }

    fn next_line(&mut self) -> std::io::Result<Option<&[u8]>> {
        loop {
            if let Some(at) = memchr::memchr(b'\n', &self.buf[self.start..self.end]) {
                let line = self.start..self.start + at;
                self.start += at + 1;
                return Ok(Some(strip_cr(&self.buf[line])));
            }
            if self.eof {
                if self.start == self.end {
                    return Ok(None);
                }
                let line = self.start..self.end;
                self.start = self.end;
                return Ok(Some(strip_cr(&self.buf[line])));
            }
            // Keep the partial line, make room (growing only for a line longer
            // than the buffer) and read more.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.end == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.reader.read(&mut self.buf[self.end..])?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
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
    user: &'a [u8],
    item: &'a [u8],
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

    fn parse<'a>(&self, line: &'a [u8]) -> Result<Fields<'a>, String> {
        let mut columns: [&[u8]; 16] = [&[]; 16];
        let count = split_fields(line, self.separator.as_bytes(), &mut columns);
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
            let bytes = columns[at].trim_ascii();
            if bytes.is_empty() {
                Err(format!("empty {what} id"))
            } else {
                Ok(bytes)
            }
        };
        let user = id(self.user, "user")?;
        let item = id(self.item, "item")?;
        let rating = parse_rating(columns[self.rating].trim_ascii())?;
        let timestamp = match self.timestamp {
            Some(at) if at < count => {
                let bytes = columns[at].trim_ascii();
                Some(
                    parse_timestamp(bytes)
                        .ok_or_else(|| format!("timestamp {:?} is not a number", lossy(bytes)))?,
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

/// Splits `line` at every `separator`, filling `columns` (extra fields are
/// counted but not stored). Returns the number of fields.
fn split_fields<'a>(line: &'a [u8], separator: &[u8], columns: &mut [&'a [u8]; 16]) -> usize {
    let mut count = 0;
    let mut push = |field: &'a [u8]| {
        if count < columns.len() {
            columns[count] = field;
        }
        count += 1;
    };
    if let [byte] = *separator {
        // Rating lines are short: a plain scan beats a memchr call per field.
        let mut start = 0;
        for (at, &b) in line.iter().enumerate() {
            if b == byte {
                push(&line[start..at]);
                start = at + 1;
            }
        }
        push(&line[start..]);
    } else {
        let mut rest = line;
        while let Some(at) = memchr::memmem::find(rest, separator) {
            push(&rest[..at]);
            rest = &rest[at + separator.len()..];
        }
        push(rest);
    }
    count
}

fn utf8_reason(what: &str, e: &std::str::Utf8Error) -> String {
    format!(
        "{what} id is not valid UTF-8 (byte {})",
        e.valid_up_to() + 1
    )
}

/// A rating: "4" and "3.5" take the fast path, anything else the full parser.
fn parse_rating(bytes: &[u8]) -> Result<f32, String> {
    let value = match bytes {
        [d] if d.is_ascii_digit() => f32::from(d - b'0'),
        [d, b'.', f] if d.is_ascii_digit() && f.is_ascii_digit() => {
            f32::from(d - b'0') + f32::from(f - b'0') / 10.0
        }
        _ => std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.parse::<f32>().ok())
            .ok_or_else(|| format!("rating {:?} is not a number", lossy(bytes)))?,
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(format!("rating {:?} is not finite", lossy(bytes)))
    }
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

/// Unix timestamps are integers, but RecBole types them as floats (`881250949.0`).
fn parse_timestamp(bytes: &[u8]) -> Option<i64> {
    if !bytes.is_empty() && bytes.len() <= 18 && bytes.iter().all(u8::is_ascii_digit) {
        return Some(bytes.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')));
    }
    let text = std::str::from_utf8(bytes).ok()?;
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
        read_ratings_from(text.as_bytes(), 0, Path::new("test.data"), options)
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
    fn non_finite_ratings_are_refused_in_every_format() {
        // (file with {} for the rating, line of the rating)
        let files = [
            ("1\t2\t{}\t3\n", 1),
            ("1::2::{}::3\n", 1),
            ("userId,movieId,rating,timestamp\n1,2,{},3\n", 2),
            ("1,2,{}\n", 1),
            ("user_id:token\titem_id:token\trating:float\n1\t2\t{}\n", 2),
        ];
        let values = [
            "NaN",
            "nan",
            "inf",
            "-inf",
            "infinity",
            "+Infinity",
            "1e39",
            "-3.5e38",
        ];
        for (template, line) in files {
            for value in values {
                let text = template.replace("{}", value);
                let err = read(&text, auto()).unwrap_err().to_string();
                assert_eq!(
                    err,
                    format!("test.data:{line}: rating {value:?} is not finite"),
                    "{text:?}"
                );
            }
        }
    }

    #[test]
    fn invalid_utf8_is_reported_not_panicked_on() {
        let bytes = b"1\t2\t3\t4\n\xff\xfe\t2\t3\t4\n";
        let err = read_ratings_from(&bytes[..], 0, Path::new("x"), auto()).unwrap_err();
        assert_eq!(err.to_string(), "x:2: user id is not valid UTF-8 (byte 1)");
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
    fn lines_longer_than_the_buffer_and_a_missing_final_newline_are_read() {
        let long_id = "u".repeat(3 << 20);
        let text = format!("{long_id}\t1\t4\t5\n2\t1\t3\t6");
        let (data, _) = read(&text, auto()).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data.users.ids()[0].as_str().len(), 3 << 20);
        assert_eq!(data.timestamps, vec![5, 6]);
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
