//! Fuzzing the ratings file readers with proptest (stable Rust, no nightly).
//!
//! Arbitrary bytes, and lines built from the pieces real files are made of
//! (ids, ratings, separators, typed headers, non-finite numbers, CR, invalid
//! UTF-8), are read in every format, strict and with `skip_bad_lines`. A read
//! must never panic; an error must name a line of the input (or be one of the
//! two whole-file errors); what is read must be finite ratings; and reading
//! the same bytes in tiny pieces must give the same answer as reading them at
//! once.
//!
//! Cases per property: 10,000 when `CI` is set, 1,000 otherwise;
//! `PROPTEST_CASES` overrides both.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::path::Path;

use proptest::prelude::*;
use recstream_core::data::ratings::read_ratings_from;
use recstream_core::data::{DataError, RatingsFormat, ReadOptions};

mod common;

fn config() -> ProptestConfig {
    common::fuzz_config()
}

const FORMATS: [RatingsFormat; 5] = [
    RatingsFormat::Auto,
    RatingsFormat::Ml100k,
    RatingsFormat::Ml1m,
    RatingsFormat::Csv,
    RatingsFormat::Recbole,
];

/// A reader that hands out at most `piece` bytes per call.
struct Trickle<'a> {
    bytes: &'a [u8],
    piece: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.piece.min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

/// What a read gave, in a comparable form.
fn outcome(
    result: Result<(recstream_core::Dataset, recstream_core::data::ReadReport), DataError>,
) -> String {
    match result {
        Ok((data, report)) => format!(
            "{} ratings {:?} {:?} {:?}",
            data.len(),
            data.ratings,
            data.timestamps,
            report
        ),
        Err(e) => e.to_string(),
    }
}

/// Reads `bytes` in every format, strict and skipping, and checks the answers.
fn check_every_format(bytes: &[u8], piece: usize) {
    let path = Path::new("fuzz.data");
    // Lines as the reader counts them: split at '\n', a last unterminated one included.
    let lines = if bytes.is_empty() {
        0
    } else {
        bytes.split(|&b| b == b'\n').count() - usize::from(bytes.ends_with(b"\n"))
    };
    for format in FORMATS {
        for skip_bad_lines in [false, true] {
            let options = ReadOptions {
                format,
                skip_bad_lines,
            };
            let result = read_ratings_from(bytes, bytes.len() as u64, path, options);
            match &result {
                Ok((data, report)) => {
                    assert!(!data.is_empty());
                    assert!(data.ratings.iter().all(|r| r.value.is_finite()));
                    assert!(data.timestamps.is_empty() || data.has_timestamps());
                    assert_eq!(report.lines, lines, "{format} {bytes:?}");
                    assert!(data.len() + report.skipped <= lines);
                    assert!(skip_bad_lines || report.skipped == 0);
                    for example in &report.skipped_examples {
                        let line: usize = example
                            .strip_prefix("line ")
                            .and_then(|rest| rest.split(':').next())
                            .and_then(|n| n.parse().ok())
                            .unwrap_or_else(|| panic!("{example:?} names no line"));
                        assert!((1..=lines).contains(&line), "{example}");
                    }
                }
                Err(DataError::BadLine { line, reason, .. }) => {
                    assert!(
                        (1..=lines).contains(line),
                        "line {line} of {lines}: {reason}"
                    );
                    assert!(!reason.is_empty());
                }
                Err(DataError::BadFile { reason, .. }) => assert!(
                    reason == "no ratings in the file"
                        || reason.starts_with("cannot tell the ratings format from the first line"),
                    "{reason}"
                ),
                Err(e @ DataError::Io { .. }) => panic!("reading a slice failed: {e}"),
            }
            let trickled = read_ratings_from(Trickle { bytes, piece }, 0, path, options);
            assert_eq!(
                outcome(trickled),
                outcome(result),
                "{format} in pieces of {piece}"
            );
        }
    }
}

/// The pieces ratings files are made of.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    let pieces: Vec<&'static [u8]> = vec![
        b"1",
        b"42",
        b"007",
        b"0",
        b"4194303",
        b"99999999999999999999",
        b"u-7",
        b"tt0114709",
        b"3",
        b"3.5",
        b"0.5",
        b"5",
        b"-1",
        b"1e6",
        b"1e39",
        b"NaN",
        b"inf",
        b"-inf",
        b"881250949",
        b"881250949.0",
        b"1e300",
        b"-",
        b".",
        b"",
        b"\t",
        b"::",
        b":",
        b",",
        b" ",
        b"\r",
        b"\"",
        b"user_id:token",
        b"item_id:token",
        b"rating:float",
        b"timestamp:float",
        b"userId",
        b"movieId",
        b"rating",
        b"timestamp",
        "Misérables".as_bytes(),
        b"\xff\xfe",
        b"\xc3",
    ];
    prop_oneof![
        4 => prop::sample::select(pieces).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 0..6),
    ]
}

fn line() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..10).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_name_a_line(
        bytes in prop::collection::vec(any::<u8>(), 0..400),
        piece in 1usize..17,
    ) {
        check_every_format(&bytes, piece);
    }

    #[test]
    fn lines_made_of_real_pieces_never_panic_and_errors_name_a_line(
        lines in prop::collection::vec(line(), 0..12),
        crlf in any::<bool>(),
        final_newline in any::<bool>(),
        piece in 1usize..17,
    ) {
        let mut bytes = lines.join(if crlf { &b"\r\n"[..] } else { &b"\n"[..] });
        if final_newline {
            bytes.push(b'\n');
        }
        check_every_format(&bytes, piece);
    }
}
