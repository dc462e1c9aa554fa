//! A walk over a request body that checks every length before anything is
//! allocated from it.
//!
//! `kafka-protocol` 0.18 decodes an array by first calling
//! `Vec::with_capacity(count)` with the count read from the wire. A
//! 20-byte frame declaring two billion elements then asks for hundreds of
//! gigabytes, and a failed allocation aborts the whole process (it is not a
//! panic that could be caught). Upstream has open pull requests for this;
//! until one ships, every request with arrays is walked here first,
//! following the schema of its version: each array count, string and bytes
//! length is checked against the bytes actually left (every element takes
//! at least one byte, so a larger count can never be valid). Only a body
//! that passes is handed to the real decoder.
//!
//! The schemas below list, per API, the fields in wire order with the
//! versions that have them; `flexible` is the first version using compact
//! encodings and tagged fields. A test encodes requests of every supported
//! version with `kafka-protocol` and checks that this walk consumes them
//! exactly, so a schema slip shows up there rather than as a refused client.

use kafka_protocol::messages::ApiKey;

#[derive(Debug, Clone, Copy)]
enum Kind {
    I8,
    I16,
    I32,
    I64,
    Bool,
    Uuid,
    /// String or nullable string.
    Str,
    /// Bytes or nullable bytes.
    Bytes,
    /// Array (or nullable array) of structs.
    Arr(&'static [Field]),
    ArrI32,
    ArrStr,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    kind: Kind,
    min: i16,
    max: i16,
}

const fn all(kind: Kind) -> Field {
    Field {
        kind,
        min: 0,
        max: i16::MAX,
    }
}
const fn from(min: i16, kind: Kind) -> Field {
    Field {
        kind,
        min,
        max: i16::MAX,
    }
}
const fn upto(max: i16, kind: Kind) -> Field {
    Field { kind, min: 0, max }
}
const fn between(min: i16, max: i16, kind: Kind) -> Field {
    Field { kind, min, max }
}

use Kind::*;

const PRODUCE_PARTITION: &[Field] = &[all(I32), all(Bytes)];
const PRODUCE_TOPIC: &[Field] = &[upto(12, Str), from(13, Uuid), all(Arr(PRODUCE_PARTITION))];
const PRODUCE: &[Field] = &[from(3, Str), all(I16), all(I32), all(Arr(PRODUCE_TOPIC))];

const FETCH_PARTITION: &[Field] = &[
    all(I32),
    from(9, I32),
    all(I64),
    from(12, I32),
    from(5, I64),
    all(I32),
];
const FETCH_TOPIC: &[Field] = &[upto(12, Str), from(13, Uuid), all(Arr(FETCH_PARTITION))];
const FORGOTTEN_TOPIC: &[Field] = &[upto(12, Str), from(13, Uuid), all(ArrI32)];
const FETCH: &[Field] = &[
    upto(14, I32),
    all(I32),
    all(I32),
    all(I32),
    all(I8),
    from(7, I32),
    from(7, I32),
    all(Arr(FETCH_TOPIC)),
    from(7, Arr(FORGOTTEN_TOPIC)),
    from(11, Str),
];

const LIST_OFFSETS_PARTITION: &[Field] = &[all(I32), from(4, I32), all(I64)];
const LIST_OFFSETS_TOPIC: &[Field] = &[all(Str), all(Arr(LIST_OFFSETS_PARTITION))];
const LIST_OFFSETS: &[Field] = &[
    all(I32),
    from(2, I8),
    all(Arr(LIST_OFFSETS_TOPIC)),
    from(10, I32),
];

const METADATA_TOPIC: &[Field] = &[from(10, Uuid), all(Str)];
const METADATA: &[Field] = &[
    all(Arr(METADATA_TOPIC)),
    from(4, Bool),
    between(8, 10, Bool),
    from(8, Bool),
];

const COMMIT_PARTITION: &[Field] = &[all(I32), all(I64), from(6, I32), all(Str)];
const COMMIT_TOPIC: &[Field] = &[all(Str), all(Arr(COMMIT_PARTITION))];
const OFFSET_COMMIT: &[Field] = &[
    all(Str),
    all(I32),
    all(Str),
    from(7, Str),
    upto(4, I64),
    all(Arr(COMMIT_TOPIC)),
];

const OFFSET_FETCH_TOPIC: &[Field] = &[all(Str), all(ArrI32)];
const OFFSET_FETCH: &[Field] = &[all(Str), all(Arr(OFFSET_FETCH_TOPIC)), from(7, Bool)];

const JOIN_PROTOCOL: &[Field] = &[all(Str), all(Bytes)];
const JOIN_GROUP: &[Field] = &[
    all(Str),
    all(I32),
    from(1, I32),
    all(Str),
    from(5, Str),
    all(Str),
    all(Arr(JOIN_PROTOCOL)),
    from(8, Str),
];

const SYNC_ASSIGNMENT: &[Field] = &[all(Str), all(Bytes)];
const SYNC_GROUP: &[Field] = &[
    all(Str),
    all(I32),
    all(Str),
    from(3, Str),
    from(5, Str),
    from(5, Str),
    all(Arr(SYNC_ASSIGNMENT)),
];

const LEAVE_MEMBER: &[Field] = &[all(Str), all(Str), from(5, Str)];
const LEAVE_GROUP: &[Field] = &[all(Str), upto(2, Str), from(3, Arr(LEAVE_MEMBER))];

const DESCRIBE_GROUPS: &[Field] = &[all(ArrStr), from(3, Bool)];
const LIST_GROUPS: &[Field] = &[from(4, ArrStr), from(5, ArrStr)];

const CREATE_ASSIGNMENT: &[Field] = &[all(I32), all(ArrI32)];
const CREATE_CONFIG: &[Field] = &[all(Str), all(Str)];
const CREATE_TOPIC: &[Field] = &[
    all(Str),
    all(I32),
    all(I16),
    all(Arr(CREATE_ASSIGNMENT)),
    all(Arr(CREATE_CONFIG)),
];
const CREATE_TOPICS: &[Field] = &[all(Arr(CREATE_TOPIC)), all(I32), all(Bool)];

const CONFIG_RESOURCE: &[Field] = &[all(I8), all(Str), all(ArrStr)];
const DESCRIBE_CONFIGS: &[Field] = &[all(Arr(CONFIG_RESOURCE)), all(Bool), from(3, Bool)];

/// The body schema of `key` and its first flexible version; `None` for
/// requests without arrays (nothing there is allocated from a count).
fn schema(key: ApiKey) -> Option<(&'static [Field], i16)> {
    Some(match key {
        ApiKey::Produce => (PRODUCE, 9),
        ApiKey::Fetch => (FETCH, 12),
        ApiKey::ListOffsets => (LIST_OFFSETS, 6),
        ApiKey::Metadata => (METADATA, 9),
        ApiKey::OffsetCommit => (OFFSET_COMMIT, 8),
        ApiKey::OffsetFetch => (OFFSET_FETCH, 6),
        ApiKey::JoinGroup => (JOIN_GROUP, 6),
        ApiKey::SyncGroup => (SYNC_GROUP, 4),
        ApiKey::LeaveGroup => (LEAVE_GROUP, 4),
        ApiKey::DescribeGroups => (DESCRIBE_GROUPS, 5),
        ApiKey::ListGroups => (LIST_GROUPS, 3),
        ApiKey::CreateTopics => (CREATE_TOPICS, 5),
        ApiKey::DescribeConfigs => (DESCRIBE_CONFIGS, 4),
        _ => return None,
    })
}

/// Where the walk found a length it cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed request body at byte {at}: {what}")]
pub(crate) struct Malformed {
    at: usize,
    what: &'static str,
}

struct Walk<'a> {
    bytes: &'a [u8],
    at: usize,
    version: i16,
    flexible: bool,
}

impl Walk<'_> {
    fn bad(&self, what: &'static str) -> Malformed {
        Malformed { at: self.at, what }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        if n > self.left() {
            return Err(self.bad("length past the end"));
        }
        let s = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }

    fn i16(&mut self) -> Result<i16, Malformed> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn uvarint(&mut self) -> Result<u32, Malformed> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let b = self.take(1)?[0];
            value |= u32::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(self.bad("varint longer than 5 bytes"))
    }

    /// A length or count that may be null; `None` for null.
    fn length(&mut self, wide: bool) -> Result<Option<usize>, Malformed> {
        let n: i64 = if self.flexible {
            i64::from(self.uvarint()?) - 1
        } else if wide {
            i64::from(self.i32()?)
        } else {
            i64::from(self.i16()?)
        };
        match n {
            -1 => Ok(None),
            n if n < -1 => Err(self.bad("negative length")),
            n => {
                let n = usize::try_from(n).map_err(|_| self.bad("length"))?;
                if n > self.left() {
                    return Err(self.bad("length or count past the end"));
                }
                Ok(Some(n))
            }
        }
    }

    fn field(&mut self, kind: Kind) -> Result<(), Malformed> {
        match kind {
            I8 | Bool => self.take(1).map(drop),
            I16 => self.take(2).map(drop),
            I32 => self.take(4).map(drop),
            I64 => self.take(8).map(drop),
            Uuid => self.take(16).map(drop),
            Str => {
                let n = self.length(false)?.unwrap_or(0);
                self.take(n).map(drop)
            }
            Bytes => {
                let n = self.length(true)?.unwrap_or(0);
                self.take(n).map(drop)
            }
            ArrI32 => {
                let n = self.length(true)?.unwrap_or(0);
                self.take(n.checked_mul(4).ok_or_else(|| self.bad("count"))?)
                    .map(drop)
            }
            ArrStr => {
                for _ in 0..self.length(true)?.unwrap_or(0) {
                    self.field(Str)?;
                }
                Ok(())
            }
            Arr(fields) => {
                for _ in 0..self.length(true)?.unwrap_or(0) {
                    self.structure(fields)?;
                }
                Ok(())
            }
        }
    }

    fn structure(&mut self, fields: &[Field]) -> Result<(), Malformed> {
        for f in fields {
            if (f.min..=f.max).contains(&self.version) {
                self.field(f.kind)?;
            }
        }
        if self.flexible {
            let tags = self.uvarint()? as usize;
            if tags > self.left() {
                return Err(self.bad("tagged field count past the end"));
            }
            for _ in 0..tags {
                self.uvarint()?;
                let size = self.uvarint()? as usize;
                self.take(size)?;
            }
        }
        Ok(())
    }
}

/// Checks the body of a `key` v`version` request; returns how many bytes
/// the walk consumed (for the tests).
pub(crate) fn check(key: ApiKey, version: i16, body: &[u8]) -> Result<usize, Malformed> {
    let Some((fields, flexible)) = schema(key) else {
        return Ok(0);
    };
    let mut walk = Walk {
        bytes: body,
        at: 0,
        version,
        flexible: version >= flexible,
    };
    walk.structure(fields)?;
    Ok(walk.at)
}
