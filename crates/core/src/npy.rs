//! NumPy's `.npy` array format: a small, bounds-checked reader and a writer.
//!
//! A `.npy` file is `\x93NUMPY`, a version, a header length, a Python dict
//! literal (`{'descr': '<f8', 'fortran_order': False, 'shape': (943, 100), }`)
//! and the raw elements. Only what the surprise exchange format needs is
//! read: little- or big-endian floats, integers and booleans, and fixed-width
//! strings (`<U`, UTF-32, and `|S`, bytes taken as UTF-8); object arrays
//! would need Python's pickle and are refused. The bytes come from outside,
//! so every number in the header is checked: the element count times the
//! element size must equal the data that is actually there (checked
//! arithmetic) before anything is allocated for it, and every failure is a
//! typed [`NpyError`], never a panic.

use std::fmt::Write as _;

/// The first bytes of every `.npy` file.
pub const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Why bytes could not be read as a `.npy` array.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NpyError {
    /// The bytes do not start with the `.npy` magic.
    #[error("not a .npy array (no \\x93NUMPY magic)")]
    NotNpy,
    /// A format version this reader does not know.
    #[error(".npy format version {0}.{1} is not supported (1.0, 2.0 and 3.0 are)")]
    Version(u8, u8),
    /// The bytes end inside the preamble or the header.
    #[error("the .npy header is truncated")]
    Truncated,
    /// The header dict cannot be parsed.
    #[error("bad .npy header: {0}")]
    Header(String),
    /// A dtype this reader does not handle (object arrays, structured dtypes...).
    #[error("unsupported dtype {0:?} (floats, integers, booleans and strings are supported)")]
    Dtype(String),
    /// The data is not the size the header announces.
    #[error(
        "the header announces shape {shape:?} of {item_size}-byte elements, but {found} bytes of data follow"
    )]
    Size {
        /// Shape from the header.
        shape: Vec<u64>,
        /// Bytes per element.
        item_size: usize,
        /// Bytes actually present.
        found: usize,
    },
    /// A string element is not valid text.
    #[error("string element {0} is not valid text")]
    Text(usize),
    /// An integer does not fit where it is used.
    #[error("integer {0} is out of range")]
    Range(String),
}

/// The elements of an array, widened to one type per kind.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyData {
    /// `f4` and `f8`.
    Float(Vec<f64>),
    /// `i1`..`i8` and `u1`..`u8` (a `u8` above `i64::MAX` is refused).
    Int(Vec<i64>),
    /// `b1`.
    Bool(Vec<bool>),
    /// `U<n>` and `S<n>`, trailing NULs removed as NumPy does.
    Str(Vec<String>),
}

/// An array read from a `.npy` file, in C (row-major) order.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// Length along each axis; empty for a scalar.
    pub shape: Vec<usize>,
    /// The elements, `shape.iter().product()` of them.
    pub data: NpyData,
}

/// How one element is stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Float,
    Int { signed: bool },
    Bool,
    Utf32,
    Bytes,
}

#[derive(Debug, Clone, Copy)]
struct Dtype {
    kind: Kind,
    size: usize,
    big_endian: bool,
}

impl NpyArray {
    /// Parses a whole `.npy` file.
    pub fn parse(bytes: &[u8]) -> Result<NpyArray, NpyError> {
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(NpyError::NotNpy);
        }
        let version = (
            *bytes.get(6).ok_or(NpyError::Truncated)?,
            *bytes.get(7).ok_or(NpyError::Truncated)?,
        );
        let (len_bytes, utf8_header) = match version {
            (1, 0) => (2, false),
            (2, 0) => (4, false),
            (3, 0) => (4, true),
            (major, minor) => return Err(NpyError::Version(major, minor)),
        };
        let len_field = bytes.get(8..8 + len_bytes).ok_or(NpyError::Truncated)?;
        let header_len = len_field
            .iter()
            .rev()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        let header_start = 8 + len_bytes;
        let header = header_start
            .checked_add(header_len)
            .and_then(|end| bytes.get(header_start..end))
            .ok_or(NpyError::Truncated)?;
        let header = if utf8_header {
            std::str::from_utf8(header).map_err(|_| NpyError::Header("not UTF-8".into()))?
        } else if header.is_ascii() {
            // ASCII is valid UTF-8.
            std::str::from_utf8(header).map_err(|_| NpyError::Header("not ASCII".into()))?
        } else {
            return Err(NpyError::Header("not ASCII".into()));
        };
        let (descr, fortran, shape) = parse_header(header)?;
        let dtype = parse_dtype(&descr)?;
        let data = &bytes[header_start + header_len..];
        let count = element_count(&shape, dtype.size, data.len())?;
        let mut out = NpyArray {
            shape: shape.iter().map(|&n| n as usize).collect(),
            data: decode(data, dtype, count)?,
        };
        if fortran {
            out.reorder_fortran()?;
        }
        Ok(out)
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        match &self.data {
            NpyData::Float(v) => v.len(),
            NpyData::Int(v) => v.len(),
            NpyData::Bool(v) => v.len(),
            NpyData::Str(v) => v.len(),
        }
    }

    /// True when the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A Fortran-ordered (column-major) array, reordered to C order. Only
    /// up to two dimensions are needed here; beyond that it is refused.
    fn reorder_fortran(&mut self) -> Result<(), NpyError> {
        let (rows, cols) = match self.shape[..] {
            [] | [_] => return Ok(()),
            [rows, cols] => (rows, cols),
            _ => {
                return Err(NpyError::Header(
                    "Fortran order with more than two dimensions is not supported".into(),
                ));
            }
        };
        fn transpose<T: Clone>(v: &[T], rows: usize, cols: usize) -> Vec<T> {
            // Column-major element (r, c) is at c * rows + r.
            (0..rows)
                .flat_map(|r| (0..cols).map(move |c| v[c * rows + r].clone()))
                .collect()
        }
        self.data = match &self.data {
            NpyData::Float(v) => NpyData::Float(transpose(v, rows, cols)),
            NpyData::Int(v) => NpyData::Int(transpose(v, rows, cols)),
            NpyData::Bool(v) => NpyData::Bool(transpose(v, rows, cols)),
            NpyData::Str(v) => NpyData::Str(transpose(v, rows, cols)),
        };
        Ok(())
    }
}

/// The element count of `shape`, checked against the bytes that follow the
/// header: nothing is allocated for a count the data cannot hold.
fn element_count(shape: &[u64], item_size: usize, found: usize) -> Result<usize, NpyError> {
    let size_error = || NpyError::Size {
        shape: shape.to_vec(),
        item_size,
        found,
    };
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n))
        .and_then(|c| usize::try_from(c).ok())
        .ok_or_else(size_error)?;
    let needed = count.checked_mul(item_size).ok_or_else(size_error)?;
    if needed != found {
        return Err(size_error());
    }
    // A zero-sized dtype would let any count pass with no data: refused in
    // `parse_dtype`, so `count <= found` here.
    Ok(count)
}

fn decode(data: &[u8], dtype: Dtype, count: usize) -> Result<NpyData, NpyError> {
    let size = dtype.size;
    // `chunks_exact` gives `count` chunks: `data.len() == count * size`.
    let words = || {
        data.chunks_exact(size).map(move |chunk| {
            let mut word = [0u8; 8];
            if dtype.big_endian {
                for (w, b) in word.iter_mut().zip(chunk.iter().rev()) {
                    *w = *b;
                }
            } else {
                word[..size].copy_from_slice(chunk);
            }
            u64::from_le_bytes(word)
        })
    };
    Ok(match dtype.kind {
        Kind::Float => NpyData::Float(
            words()
                .map(|w| match size {
                    4 => f64::from(f32::from_bits(w as u32)),
                    _ => f64::from_bits(w),
                })
                .collect(),
        ),
        Kind::Int { signed } => {
            let bits = 8 * size as u32;
            let mut out = Vec::with_capacity(count);
            for w in words() {
                let value = if signed {
                    // Sign-extend from `bits`.
                    ((w << (64 - bits)) as i64) >> (64 - bits)
                } else {
                    i64::try_from(w).map_err(|_| NpyError::Range(w.to_string()))?
                };
                out.push(value);
            }
            NpyData::Int(out)
        }
        Kind::Bool => NpyData::Bool(data.iter().map(|&b| b != 0).collect()),
        Kind::Utf32 => {
            let mut out = Vec::with_capacity(count);
            for (n, element) in data.chunks_exact(size).enumerate() {
                let mut s = String::new();
                for unit in element.chunks_exact(4) {
                    let mut b = [0u8; 4];
                    b.copy_from_slice(unit);
                    let code = if dtype.big_endian {
                        u32::from_be_bytes(b)
                    } else {
                        u32::from_le_bytes(b)
                    };
                    s.push(char::from_u32(code).ok_or(NpyError::Text(n))?);
                }
                s.truncate(s.trim_end_matches('\0').len());
                out.push(s);
            }
            NpyData::Str(out)
        }
        Kind::Bytes => {
            let mut out = Vec::with_capacity(count);
            for (n, element) in data.chunks_exact(size).enumerate() {
                let end = element.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                let s = std::str::from_utf8(&element[..end]).map_err(|_| NpyError::Text(n))?;
                out.push(s.to_string());
            }
            NpyData::Str(out)
        }
    })
}

fn parse_dtype(descr: &str) -> Result<Dtype, NpyError> {
    let unsupported = || NpyError::Dtype(descr.to_string());
    let mut chars = descr.chars();
    let order = chars.next().ok_or_else(unsupported)?;
    let code = chars.next().ok_or_else(unsupported)?;
    let size: usize = chars.as_str().parse().map_err(|_| unsupported())?;
    let big_endian = match order {
        '<' | '|' => false,
        '>' => true,
        // Native order: every platform NumPy writes from today is little-endian.
        '=' => cfg!(target_endian = "big"),
        _ => return Err(unsupported()),
    };
    let (kind, item_size) = match (code, size) {
        ('f', 4 | 8) => (Kind::Float, size),
        ('i', 1 | 2 | 4 | 8) => (Kind::Int { signed: true }, size),
        ('u', 1 | 2 | 4 | 8) => (Kind::Int { signed: false }, size),
        ('b', 1) => (Kind::Bool, 1),
        ('U', n) if n > 0 => (Kind::Utf32, n.checked_mul(4).ok_or_else(unsupported)?),
        ('S', n) if n > 0 => (Kind::Bytes, n),
        _ => return Err(unsupported()),
    };
    Ok(Dtype {
        kind,
        size: item_size,
        big_endian,
    })
}

/// The header dict's three keys: `descr`, `fortran_order` and `shape`.
fn parse_header(header: &str) -> Result<(String, bool, Vec<u64>), NpyError> {
    let bad = |what: &str| NpyError::Header(what.to_string());
    let mut p = Parser {
        rest: header.trim_end(),
    };
    p.expect('{').map_err(|_| bad("it is not a dict"))?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    loop {
        if p.eat('}') {
            break;
        }
        let key = p.string().ok_or_else(|| bad("a key is not a string"))?;
        p.expect(':').map_err(|_| bad("a key has no ':'"))?;
        match key.as_str() {
            "descr" => {
                descr = Some(p.string().ok_or_else(|| {
                    NpyError::Dtype("a structured dtype (a list of fields)".into())
                })?);
            }
            "fortran_order" => fortran = Some(p.boolean().ok_or_else(|| bad("fortran_order"))?),
            "shape" => {
                shape = Some(
                    p.tuple()
                        .ok_or_else(|| bad("shape is not a tuple of integers"))?,
                )
            }
            other => return Err(NpyError::Header(format!("unknown key {other:?}"))),
        }
        if !p.eat(',') {
            p.expect('}')
                .map_err(|_| bad("entries are not separated by ','"))?;
            break;
        }
    }
    if !p.rest.trim().is_empty() {
        return Err(bad("text after the dict"));
    }
    match (descr, fortran, shape) {
        (Some(d), Some(f), Some(s)) => Ok((d, f, s)),
        _ => Err(bad("descr, fortran_order or shape is missing")),
    }
}

/// A cursor over the few Python literals a header uses.
struct Parser<'a> {
    rest: &'a str,
}

impl Parser<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> Result<(), ()> {
        if self.eat(c) { Ok(()) } else { Err(()) }
    }

    /// A quoted string without escapes (dtype codes and key names have none).
    fn string(&mut self) -> Option<String> {
        self.skip_space();
        let quote = self
            .rest
            .chars()
            .next()
            .filter(|&q| q == '\'' || q == '"')?;
        let body = &self.rest[1..];
        let end = body.find(quote)?;
        let s = &body[..end];
        if s.contains('\\') {
            return None;
        }
        self.rest = &body[end + 1..];
        Some(s.to_string())
    }

    fn boolean(&mut self) -> Option<bool> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Some(value);
            }
        }
        None
    }

    fn tuple(&mut self) -> Option<Vec<u64>> {
        self.expect('(').ok()?;
        let mut out = Vec::new();
        loop {
            if self.eat(')') {
                return Some(out);
            }
            self.skip_space();
            let digits = self.rest.bytes().take_while(u8::is_ascii_digit).count();
            // Python 2 wrote `3L`.
            let n: u64 = self.rest[..digits].parse().ok()?;
            self.rest = self.rest[digits..].trim_start_matches('L');
            out.push(n);
            if !self.eat(',') {
                self.expect(')').ok()?;
                return Some(out);
            }
        }
    }
}

/// An array to write: elements in C order and the shape they fill.
#[derive(Debug, Clone, Copy)]
pub enum NpyOut<'a> {
    /// Written as `<f4`.
    F32(&'a [f32]),
    /// Written as `<f8`.
    F64(&'a [f64]),
    /// Written as `<i8`.
    I64(&'a [i64]),
    /// Written as `<i4`.
    I32(&'a [i32]),
    /// Written as `|b1`.
    Bool(&'a [bool]),
    /// Written as `<U<n>`, `n` the longest string in characters (at least 1).
    Str(&'a [&'a str]),
}

/// Encodes an array as a version 1.0 `.npy` file (2.0 when the header needs
/// it). The caller ensures `shape` multiplies to the element count.
pub fn encode(array: NpyOut<'_>, shape: &[usize]) -> Vec<u8> {
    let width = match array {
        NpyOut::Str(strings) => strings
            .iter()
            .map(|s| s.chars().count())
            .max()
            .unwrap_or(0)
            .max(1),
        _ => 0,
    };
    let descr = match array {
        NpyOut::F32(_) => "<f4".to_string(),
        NpyOut::F64(_) => "<f8".to_string(),
        NpyOut::I64(_) => "<i8".to_string(),
        NpyOut::I32(_) => "<i4".to_string(),
        NpyOut::Bool(_) => "|b1".to_string(),
        NpyOut::Str(_) => format!("<U{width}"),
    };
    let mut dims = String::new();
    for n in shape {
        let _ = write!(dims, "{n}, ");
    }
    let dims = match shape.len() {
        0 => String::new(),
        1 => dims.trim_end().to_string(),
        _ => dims.trim_end_matches(", ").to_string(),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    // The data starts on a 64-byte boundary; the header ends with '\n'.
    let (version, len_bytes) = if 10 + header.len() < 65_536 - 64 {
        (1u8, 2)
    } else {
        (2, 4)
    };
    let total = (6 + 2 + len_bytes + header.len() + 1).next_multiple_of(64);
    let pad = total - (6 + 2 + len_bytes + header.len() + 1);
    header.extend(std::iter::repeat_n(' ', pad));
    header.push('\n');
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    let len = header.len() as u32;
    out.extend_from_slice(&len.to_le_bytes()[..len_bytes]);
    out.extend_from_slice(header.as_bytes());
    match array {
        NpyOut::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyOut::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyOut::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyOut::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        NpyOut::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        NpyOut::Str(v) => {
            for s in v {
                let mut n = 0;
                for c in s.chars() {
                    out.extend_from_slice(&u32::from(c).to_le_bytes());
                    n += 1;
                }
                out.extend(std::iter::repeat_n(0u8, 4 * (width - n)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A file as NumPy 2.x writes `np.save(f, np.arange(6.0).reshape(2, 3))`.
    fn numpy_file() -> Vec<u8> {
        let mut out = b"\x93NUMPY\x01\x00v\x00".to_vec();
        let mut header = "{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }".to_string();
        header.extend(std::iter::repeat_n(' ', 118 - header.len() - 1));
        header.push('\n');
        out.extend_from_slice(header.as_bytes());
        for x in 0..6 {
            out.extend_from_slice(&f64::from(x).to_le_bytes());
        }
        out
    }

    fn with_header(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[1, 0]);
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_what_numpy_writes() {
        let array = NpyArray::parse(&numpy_file()).unwrap();
        assert_eq!(array.shape, [2, 3]);
        assert_eq!(
            array.data,
            NpyData::Float(vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
        );
    }

    #[test]
    fn written_arrays_read_back_and_align_to_64_bytes() {
        let strings = ["196", "Kolya (1996)", "Misérables, Les (1995)", ""];
        let cases: [(NpyOut<'_>, Vec<usize>, NpyData); 6] = [
            (
                NpyOut::F32(&[1.5, -2.25]),
                vec![2],
                NpyData::Float(vec![1.5, -2.25]),
            ),
            (NpyOut::F64(&[3.5]), vec![], NpyData::Float(vec![3.5])),
            (
                NpyOut::I64(&[-1, 0, 7, i64::MAX]),
                vec![2, 2],
                NpyData::Int(vec![-1, 0, 7, i64::MAX]),
            ),
            (NpyOut::I32(&[-5, 9]), vec![1, 2], NpyData::Int(vec![-5, 9])),
            (
                NpyOut::Bool(&[true, false]),
                vec![2],
                NpyData::Bool(vec![true, false]),
            ),
            (
                NpyOut::Str(&strings),
                vec![4],
                NpyData::Str(strings.iter().map(|s| s.to_string()).collect()),
            ),
        ];
        for (out, shape, expected) in cases {
            let bytes = encode(out, &shape);
            let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            assert_eq!(header_end % 64, 0, "{out:?}");
            let array = NpyArray::parse(&bytes).unwrap();
            assert_eq!((array.shape, array.data), (shape, expected));
        }
    }

    #[test]
    fn other_byte_orders_widths_and_fortran_order_are_read() {
        let data: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|x| x.to_be_bytes())
            .collect();
        let bytes = with_header(
            "{'descr': '>f4', 'fortran_order': True, 'shape': (2, 3)}",
            &data,
        );
        let array = NpyArray::parse(&bytes).unwrap();
        // Column-major [1 2 3 4 5 6] is the matrix [[1 3 5] [2 4 6]].
        assert_eq!(
            array.data,
            NpyData::Float(vec![1.0, 3.0, 5.0, 2.0, 4.0, 6.0])
        );
        let bytes = with_header(
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2,)}",
            &[255, 3],
        );
        assert_eq!(
            NpyArray::parse(&bytes).unwrap().data,
            NpyData::Int(vec![255, 3])
        );
        let bytes = with_header(
            "{'descr': '<i2', 'fortran_order': False, 'shape': (1,)}",
            &[0xfe, 0xff],
        );
        assert_eq!(
            NpyArray::parse(&bytes).unwrap().data,
            NpyData::Int(vec![-2])
        );
        let bytes = with_header(
            "{'descr': '|S3', 'fortran_order': False, 'shape': (2,)}",
            b"ab\0xyz",
        );
        assert_eq!(
            NpyArray::parse(&bytes).unwrap().data,
            NpyData::Str(vec!["ab".into(), "xyz".into()])
        );
    }

    #[test]
    fn unsupported_dtypes_are_named() {
        for descr in ["|O", "<c16", "<f2", "<U0", "|V8", "<M8[ns]", "f8"] {
            let header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': (1,)}}");
            let err = NpyArray::parse(&with_header(&header, &[0; 16])).unwrap_err();
            assert_eq!(err, NpyError::Dtype(descr.to_string()), "{descr}");
        }
        let header = "{'descr': [('a', '<f8')], 'fortran_order': False, 'shape': (1,)}";
        let err = NpyArray::parse(&with_header(header, &[0; 8])).unwrap_err();
        assert!(matches!(err, NpyError::Dtype(_)), "{err}");
    }

    #[test]
    fn huge_shapes_are_refused_before_any_allocation() {
        for shape in [
            "(18446744073709551615,)",
            "(4294967296, 4294967296)",
            "(1000000000000,)",
            "(99999999999999999999999,)",
        ] {
            let header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape}}}");
            let err = NpyArray::parse(&with_header(&header, &[0; 16])).unwrap_err();
            assert!(
                matches!(err, NpyError::Size { .. } | NpyError::Header(_)),
                "{shape}: {err}"
            );
        }
        // Strings: the width times 4 overflows.
        let header = format!(
            "{{'descr': '<U{}', 'fortran_order': False, 'shape': (1,)}}",
            usize::MAX / 2
        );
        assert!(NpyArray::parse(&with_header(&header, &[0; 16])).is_err());
    }

    #[test]
    fn a_wrong_data_length_is_a_size_error() {
        let mut bytes = numpy_file();
        bytes.pop();
        let err = NpyArray::parse(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the header announces shape [2, 3] of 8-byte elements, but 47 bytes of data follow"
        );
        bytes.extend_from_slice(&[0, 0]);
        assert!(matches!(
            NpyArray::parse(&bytes),
            Err(NpyError::Size { .. })
        ));
    }

    #[test]
    fn invalid_code_points_and_big_unsigned_values_are_errors() {
        let header = "{'descr': '<U1', 'fortran_order': False, 'shape': (1,)}";
        let err = NpyArray::parse(&with_header(header, &0xd800u32.to_le_bytes())).unwrap_err();
        assert_eq!(err, NpyError::Text(0));
        let header = "{'descr': '<u8', 'fortran_order': False, 'shape': (1,)}";
        let err = NpyArray::parse(&with_header(header, &u64::MAX.to_le_bytes())).unwrap_err();
        assert!(matches!(err, NpyError::Range(_)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::fuzz_cases()))]

        #[test]
        fn every_truncation_is_an_error(cut in 0usize..176) {
            let bytes = numpy_file();
            prop_assume!(cut < bytes.len());
            prop_assert!(NpyArray::parse(&bytes[..cut]).is_err());
        }

        #[test]
        fn flipped_bits_never_panic(at in 0usize..176, bit in 0u8..8) {
            let mut bytes = numpy_file();
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let _ = NpyArray::parse(&bytes);
        }

        #[test]
        fn arbitrary_bytes_after_the_magic_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&tail);
            let _ = NpyArray::parse(&bytes);
        }

        #[test]
        fn arbitrary_headers_never_panic(header in "\\{[ -~]{0,120}\\}", data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = NpyArray::parse(&with_header(&header, &data));
        }

        #[test]
        fn float_arrays_round_trip(values in proptest::collection::vec(any::<f32>(), 0..50)) {
            let array = NpyArray::parse(&encode(NpyOut::F32(&values), &[values.len()])).unwrap();
            let NpyData::Float(back) = array.data else { panic!("not floats") };
            prop_assert_eq!(back.len(), values.len());
            for (a, b) in back.iter().zip(&values) {
                prop_assert_eq!((*a as f32).to_bits(), b.to_bits());
            }
        }

        #[test]
        fn string_arrays_round_trip(values in proptest::collection::vec("[^\\x00]{0,12}", 0..20)) {
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let array = NpyArray::parse(&encode(NpyOut::Str(&refs), &[refs.len()])).unwrap();
            prop_assert_eq!(array.data, NpyData::Str(values));
        }
    }
}
