//! The fixed header of a RecordBatch (magic 2), read by hand.
//!
//! The broker stores what producers send byte for byte and never looks at
//! individual records: it needs only the 61-byte header (offsets, producer
//! id and sequence, timestamps) to index, deduplicate and serve a batch.
//! Parsing that header by hand, with every length checked against the
//! buffer, keeps the hot path free of allocation and keeps hostile bytes
//! from reaching anything that trusts a length. The CRC (CRC-32C over
//! everything from `attributes` on) is checked once on the way in; since the
//! base offset lies before the checksummed range, assigning offsets by
//! rewriting those 8 bytes leaves the stored CRC valid.

use bytes::{Bytes, BytesMut};

/// Size of the RecordBatch v2 header, up to and including the record count.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength`'s range begins (`baseOffset` + `batchLength`).
const LOG_OVERHEAD: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;

/// Attribute bit: the batch belongs to a transaction.
const TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: the batch is a transaction marker.
const CONTROL: i16 = 0x20;

/// What the broker needs to know about one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offsets the batch spans, minus one (`lastOffsetDelta`).
    pub last_offset_delta: i32,
    /// Largest timestamp in the batch.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// That producer's epoch.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records: i32,
    /// Whether the batch is part of a transaction.
    pub transactional: bool,
    /// Whether the batch is a transaction marker.
    pub control: bool,
}

impl BatchHeader {
    /// Sequence number of the last record (sequences wrap at `i32::MAX`).
    pub fn last_sequence(&self) -> i32 {
        wrapping_seq(self.base_sequence, self.last_offset_delta)
    }
}

/// `seq + delta`, wrapping past `i32::MAX` to 0 as Kafka's sequences do.
pub fn wrapping_seq(seq: i32, delta: i32) -> i32 {
    let sum = i64::from(seq) + i64::from(delta);
    if sum > i64::from(i32::MAX) {
        (sum - i64::from(i32::MAX) - 1) as i32
    } else {
        sum as i32
    }
}

/// Why a produced `records` field is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Shorter than its header, or its length field disagrees with its size.
    #[error("record batch of {got} bytes, its header says {declared}")]
    Length {
        /// Bytes received.
        got: usize,
        /// Bytes the header declares.
        declared: i64,
    },
    /// Not a magic-2 batch (old message formats are not served).
    #[error("record batch magic {0}, only 2 is supported")]
    Magic(i8),
    /// The checksum does not match.
    #[error("record batch CRC mismatch")]
    Crc,
    /// Counts that contradict each other.
    #[error("record batch with {records} records and last offset delta {delta}")]
    Counts {
        /// `recordsCount`.
        records: i32,
        /// `lastOffsetDelta`.
        delta: i32,
    },
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Checks that `bytes` is exactly one well-formed magic-2 batch and reads
/// its header.
pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    if bytes.len() < HEADER_LEN {
        return Err(BatchError::Length {
            got: bytes.len(),
            declared: HEADER_LEN as i64,
        });
    }
    let declared = i64::from(be_i32(bytes, 8)) + LOG_OVERHEAD as i64;
    if declared != bytes.len() as i64 {
        return Err(BatchError::Length {
            got: bytes.len(),
            declared,
        });
    }
    let magic = bytes[MAGIC_AT] as i8;
    if magic != 2 {
        return Err(BatchError::Magic(magic));
    }
    let crc = u32::from_be_bytes([
        bytes[CRC_AT],
        bytes[CRC_AT + 1],
        bytes[CRC_AT + 2],
        bytes[CRC_AT + 3],
    ]);
    if crc32c::crc32c(&bytes[ATTRIBUTES_AT..]) != crc {
        return Err(BatchError::Crc);
    }
    let attributes = be_i16(bytes, ATTRIBUTES_AT);
    let header = BatchHeader {
        last_offset_delta: be_i32(bytes, 23),
        max_timestamp: be_i64(bytes, 35),
        producer_id: be_i64(bytes, 43),
        producer_epoch: be_i16(bytes, 51),
        base_sequence: be_i32(bytes, 53),
        records: be_i32(bytes, 57),
        transactional: attributes & TRANSACTIONAL != 0,
        control: attributes & CONTROL != 0,
    };
    // A produced batch holds one record per offset it spans: no gaps (those
    // come only from compaction, which this broker does not do).
    if header.records < 1 || header.last_offset_delta != header.records - 1 {
        return Err(BatchError::Counts {
            records: header.records,
            delta: header.last_offset_delta,
        });
    }
    Ok(header)
}

/// `bytes` with its base offset set to `base_offset`; the CRC stays valid.
pub fn with_base_offset(bytes: &[u8], base_offset: i64) -> Bytes {
    let mut out = BytesMut::from(bytes);
    out[..8].copy_from_slice(&base_offset.to_be_bytes());
    out.freeze()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A well-formed batch of `records` empty-ish records with the given
    /// producer fields (the record bodies are opaque to the broker).
    pub(crate) fn batch(records: i32, producer_id: i64, epoch: i16, seq: i32, ts: i64) -> Vec<u8> {
        let body = vec![0u8; 10 * records as usize];
        let mut b = Vec::with_capacity(HEADER_LEN + body.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        let len = (HEADER_LEN - LOG_OVERHEAD + body.len()) as i32;
        b.extend_from_slice(&len.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // leader epoch
        b.push(2);
        b.extend_from_slice(&0u32.to_be_bytes()); // crc, set below
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(records - 1).to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&ts.to_be_bytes());
        b.extend_from_slice(&producer_id.to_be_bytes());
        b.extend_from_slice(&epoch.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&records.to_be_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b[ATTRIBUTES_AT..]);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn parses_a_well_formed_batch() {
        let h = parse(&batch(3, 7, 1, 10, 1234)).unwrap();
        assert_eq!(h.records, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (7, 1, 10)
        );
        assert_eq!(h.last_sequence(), 12);
        assert_eq!(h.max_timestamp, 1234);
    }

    #[test]
    fn refuses_truncated_corrupted_and_inconsistent_batches() {
        let good = batch(2, -1, -1, -1, 0);
        assert!(matches!(parse(&good[..40]), Err(BatchError::Length { .. })));
        assert!(matches!(
            parse(&good[..good.len() - 1]),
            Err(BatchError::Length { .. })
        ));
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(parse(&flipped), Err(BatchError::Crc));
        let mut magic = good.clone();
        magic[MAGIC_AT] = 1;
        assert_eq!(parse(&magic), Err(BatchError::Magic(1)));
    }

    #[test]
    fn rewriting_the_base_offset_keeps_the_crc_valid() {
        let moved = with_base_offset(&batch(2, -1, -1, -1, 0), 42);
        assert_eq!(be_i64(&moved, 0), 42);
        assert!(parse(&moved).is_ok());
    }

    #[test]
    fn sequences_wrap_past_i32_max() {
        assert_eq!(wrapping_seq(i32::MAX, 1), 0);
        assert_eq!(wrapping_seq(i32::MAX - 1, 3), 1);
    }
}
