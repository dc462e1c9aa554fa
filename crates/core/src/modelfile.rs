//! The `.rsm` model file: a versioned, checksummed binary container for a [`Model`].
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! "RSMODEL\0"  u32 format version  u32 section count
//! repeated:    u32 tag  u32 0  u64 length  <length bytes>  <zero padding to 8>
//! trailer:     u32 CRC-32 of everything before it  u32 0  "RSMODEND"
//! ```
//!
//! Metadata is a JSON section (easy to extend, readable with `strings`); the
//! big arrays are raw `f32`/`u32`/`u64` sections aligned to 8 bytes. A
//! learner's snapshot adds two optional sections, the items each user rated
//! after training; readers skip sections they do not know. Loading
//! maps the file into memory, verifies every byte of the trailer and the
//! checksum before believing any length in it, then copies each section out,
//! checking each length and count against the file with checked arithmetic,
//! so a truncated, corrupted, appended-to, foreign or crafted file is a clear
//! error and never a panic or a huge allocation. A model with a NaN or
//! infinite parameter is neither written nor read: its estimates would be NaN. Saving writes a temporary file and renames it into place, so
//! a reader never sees a half-written model.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::ids::{IdMap, RawId};
use crate::model::{Model, ModelMeta};
use crate::seen::SeenItems;
use crate::svd::SvdModel;

/// First bytes of every model file.
pub const MAGIC: [u8; 8] = *b"RSMODEL\0";
/// Last bytes of every model file.
pub const END_MAGIC: [u8; 8] = *b"RSMODEND";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const HEADER_LEN: usize = 16;
const TRAILER_LEN: usize = 16;

/// Section tags, in the order they are written.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Meta = 1,
    UserIds = 2,
    ItemIds = 3,
    Titles = 4,
    UserBias = 5,
    ItemBias = 6,
    UserFactors = 7,
    ItemFactors = 8,
    UserCounts = 9,
    ItemCounts = 10,
    SeenOffsets = 11,
    SeenItems = 12,
    /// Optional: the seen items rated after training (a learner's
    /// snapshot), as CSR offsets and items; also inside the two above.
    SeenAddedOffsets = 13,
    SeenAddedItems = 14,
}

const SECTIONS: [Tag; 12] = [
    Tag::Meta,
    Tag::UserIds,
    Tag::ItemIds,
    Tag::Titles,
    Tag::UserBias,
    Tag::ItemBias,
    Tag::UserFactors,
    Tag::ItemFactors,
    Tag::UserCounts,
    Tag::ItemCounts,
    Tag::SeenOffsets,
    Tag::SeenItems,
];

/// Why a model file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file does not start like a model file.
    #[error("{path}: not a recstream model file (it does not start with the RSMODEL magic)")]
    NotAModel {
        /// The file.
        path: PathBuf,
    },
    /// The file was written by another format version.
    #[error(
        "{path}: model file format version {found}, but this build reads version {FORMAT_VERSION}{hint}"
    )]
    WrongVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Advice for the user.
        hint: &'static str,
    },
    /// The file ends early (an interrupted copy or download).
    #[error("{path}: the model file is truncated ({len} bytes, no RSMODEND end marker)")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// A complete model is followed by more bytes: something was appended.
    #[error(
        "{path}: {extra} unexpected {} after the RSMODEND end marker of a complete model (data appended to the file?)",
        bytes_word(.extra)
    )]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// How many bytes follow the end marker.
        extra: u64,
    },
    /// The checksum matches, but the rest of the trailer is damaged.
    #[error("{path}: the model file's trailer is damaged: {reason}")]
    DamagedTrailer {
        /// The file.
        path: PathBuf,
        /// Which part.
        reason: String,
    },
    /// The checksum does not match: the bytes changed after writing.
    #[error("{path}: the model file is corrupted (checksum {found:08x}, expected {expected:08x})")]
    Corrupted {
        /// The file.
        path: PathBuf,
        /// Checksum of the content.
        found: u32,
        /// Checksum stored in the trailer.
        expected: u32,
    },
    /// The model has NaN or infinite parameters (a diverged run): writing it is refused.
    #[error(
        "{path}: refusing to write a model with non-finite parameters (NaN or infinity) in {what}"
    )]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// Which parameters, e.g. "user factors".
        what: &'static str,
    },
    /// The checksum matches but the content is inconsistent (a writer bug, or a crafted file).
    #[error("{path}: invalid model file: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is inconsistent.
        reason: String,
    },
}

/// Writes `model` to `path` atomically and sets `model.id` to the content hash.
/// An inconsistent model or one with a NaN or infinite parameter is refused
/// and nothing is written.
pub fn save(model: &mut Model, path: &Path) -> Result<(), ModelFileError> {
    let io_err = |source| ModelFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = encode(model, path)?;
    let crc = crc32fast::hash(&bytes[..bytes.len() - TRAILER_LEN]);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".recstream-model-")
        .tempfile_in(dir)
        .map_err(io_err)?;
    {
        let mut out = BufWriter::new(tmp.as_file_mut());
        out.write_all(&bytes).map_err(io_err)?;
        out.flush().map_err(io_err)?;
    }
    tmp.as_file().sync_all().map_err(io_err)?;
    // Temporary files are private (0600); a model file is not.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_err)?;
    }
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    model.id = model_id(crc);
    Ok(())
}

/// Encodes a model into the file layout (trailer included); `path` is used
/// in messages. Refuses what [`decode`] would refuse: an inconsistent model,
/// or one with a NaN or infinite parameter.
pub fn encode(model: &Model, path: &Path) -> Result<Vec<u8>, ModelFileError> {
    let invalid = |reason| ModelFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    model.check_consistency().map_err(invalid)?;
    if let Some(what) = model.svd.non_finite_parameters() {
        return Err(ModelFileError::NonFinite {
            path: path.to_path_buf(),
            what,
        });
    }
    let meta = serde_json::to_vec(&MetaSection::of(model))
        .map_err(|e| invalid(format!("metadata: {e}")))?;
    let (seen_offsets, seen_items) = model.seen.to_parts(model.svd.n_users());
    let added = model.seen.added_parts(model.svd.n_users());
    let svd = &model.svd;
    let mut out = Vec::with_capacity(
        64 + 4 * (svd.user_factors.len() + svd.item_factors.len() + seen_items.len()) + meta.len(),
    );
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    let optional: &[Tag] = match added {
        Some(_) => &[Tag::SeenAddedOffsets, Tag::SeenAddedItems],
        None => &[],
    };
    out.extend_from_slice(&((SECTIONS.len() + optional.len()) as u32).to_le_bytes());
    for &tag in SECTIONS.iter().chain(optional) {
        let body: Vec<u8> = match tag {
            Tag::Meta => meta.clone(),
            Tag::UserIds => encode_strings(model.users.ids().iter().map(RawId::as_str)),
            Tag::ItemIds => encode_strings(model.items.ids().iter().map(RawId::as_str)),
            Tag::Titles => encode_strings(model.titles.iter().map(String::as_str)),
            Tag::UserBias => le_bytes(&svd.user_bias),
            Tag::ItemBias => le_bytes(&svd.item_bias),
            Tag::UserFactors => le_bytes(&svd.user_factors),
            Tag::ItemFactors => le_bytes(&svd.item_factors),
            Tag::UserCounts => le_bytes(&svd.user_counts),
            Tag::ItemCounts => le_bytes(&svd.item_counts),
            Tag::SeenOffsets => le_bytes(&seen_offsets),
            Tag::SeenItems => le_bytes(&seen_items),
            Tag::SeenAddedOffsets => added.as_ref().map_or(Vec::new(), |(o, _)| le_bytes(o)),
            Tag::SeenAddedItems => added.as_ref().map_or(Vec::new(), |(_, i)| le_bytes(i)),
        };
        out.extend_from_slice(&(tag as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(body.len() as u64).to_le_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len().next_multiple_of(8), 0);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&END_MAGIC);
    Ok(out)
}

/// Reads and verifies a model file.
pub fn load(path: &Path) -> Result<Model, ModelFileError> {
    let io_err = |source| ModelFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    // SAFETY: model files are only ever replaced by rename (see `save`), never
    // rewritten in place, so the mapped bytes do not change under us; every
    // length read from them is checked against the mapping before use.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_err)?;
    decode(&map, path)
}

/// Decodes a model from the bytes of a file; `path` is used in messages.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Model, ModelFileError> {
    let path_buf = || path.to_path_buf();
    let invalid = |reason: String| ModelFileError::Invalid {
        path: path_buf(),
        reason,
    };
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(ModelFileError::NotAModel { path: path_buf() });
    }
    if bytes.len() < HEADER_LEN {
        return Err(ModelFileError::Truncated {
            path: path_buf(),
            len: bytes.len() as u64,
        });
    }
    let version = read_u32(bytes, 8);
    if version != FORMAT_VERSION {
        let hint = if version > FORMAT_VERSION {
            "; it was written by a newer recstream, upgrade to read it"
        } else {
            "; retrain the model with this version"
        };
        return Err(ModelFileError::WrongVersion {
            path: path_buf(),
            found: version,
            hint,
        });
    }
    let expected = check_trailer(bytes, path)?;
    let body_end = bytes.len() - TRAILER_LEN;

    // Every section takes at least its 16-byte header: a count the file
    // cannot hold is refused before anything is allocated for it.
    let count = read_u32(bytes, 12) as usize;
    let room = (body_end - HEADER_LEN) / 16;
    if count > room {
        return Err(invalid(format!(
            "the header announces {count} sections, but the file has room for at most {room}"
        )));
    }
    let mut sections: Vec<(u32, &[u8])> = Vec::with_capacity(count);
    let mut at = HEADER_LEN;
    for _ in 0..count {
        if at + 16 > body_end {
            return Err(invalid(
                "a section header runs past the end of the file".into(),
            ));
        }
        let tag = read_u32(bytes, at);
        let len = u64::from_le_bytes(array8(&bytes[at + 8..at + 16]));
        let start = at + 16;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e <= body_end)
            .ok_or_else(|| invalid(format!("section {tag} runs past the end of the file")))?;
        sections.push((tag, &bytes[start..end]));
        at = end.next_multiple_of(8);
    }
    let section = |tag: Tag| {
        sections
            .iter()
            .find(|(t, _)| *t == tag as u32)
            .map(|(_, b)| *b)
            .ok_or_else(|| invalid(format!("missing section {tag:?}")))
    };
    let has = |tag: Tag| sections.iter().any(|(t, _)| *t == tag as u32);

    let meta: MetaSection = serde_json::from_slice(section(Tag::Meta)?)
        .map_err(|e| invalid(format!("metadata: {e}")))?;
    // Each factor row is `n_factors` floats of the file: a larger count is a
    // crafted one (and would size allocations when users are added later).
    if meta.n_factors == 0 || meta.n_factors > bytes.len() / 4 {
        return Err(invalid(format!(
            "{} factors is impossible in a file of {} bytes",
            meta.n_factors,
            bytes.len()
        )));
    }
    meta.scale.check().map_err(invalid)?;
    let users =
        decode_ids(section(Tag::UserIds)?).map_err(|e| invalid(format!("user ids: {e}")))?;
    let items =
        decode_ids(section(Tag::ItemIds)?).map_err(|e| invalid(format!("item ids: {e}")))?;
    let titles =
        decode_strings(section(Tag::Titles)?).map_err(|e| invalid(format!("titles: {e}")))?;
    let f32s = |tag| {
        section(tag).and_then(|b| pod_vec::<f32>(b).map_err(|e| invalid(format!("{tag:?}: {e}"))))
    };
    let u32s = |tag| {
        section(tag).and_then(|b| pod_vec::<u32>(b).map_err(|e| invalid(format!("{tag:?}: {e}"))))
    };
    let svd = SvdModel {
        n_factors: meta.n_factors,
        global_mean: meta.global_mean,
        scale: meta.scale,
        user_bias: f32s(Tag::UserBias)?,
        item_bias: f32s(Tag::ItemBias)?,
        user_factors: f32s(Tag::UserFactors)?,
        item_factors: f32s(Tag::ItemFactors)?,
        user_counts: u32s(Tag::UserCounts)?,
        item_counts: u32s(Tag::ItemCounts)?,
    };
    if let Some(what) = svd.non_finite_parameters() {
        return Err(invalid(format!(
            "non-finite parameters (NaN or infinity) in {what}"
        )));
    }
    let seen_offsets = section(Tag::SeenOffsets)
        .and_then(|b| pod_vec::<u64>(b).map_err(|e| invalid(format!("seen offsets: {e}"))))?;
    let mut seen = SeenItems::from_parts(seen_offsets, u32s(Tag::SeenItems)?, svd.n_items())
        .map_err(invalid)?;
    if has(Tag::SeenAddedOffsets) || has(Tag::SeenAddedItems) {
        let offsets = section(Tag::SeenAddedOffsets).and_then(|b| {
            pod_vec::<u64>(b).map_err(|e| invalid(format!("seen added offsets: {e}")))
        })?;
        seen.split_added(&offsets, &u32s(Tag::SeenAddedItems)?)
            .map_err(invalid)?;
    }
    let model = Model {
        meta: meta.meta,
        id: model_id(expected),
        users,
        items,
        titles,
        svd,
        seen,
    };
    model.check_consistency().map_err(invalid)?;
    Ok(model)
}

/// Verifies the trailer (`CRC | u32 0 | "RSMODEND"`) of a file that starts
/// like a model, and returns the checksum. Every trailer byte is checked; when
/// something is wrong, says whether the file was cut, damaged or appended to.
fn check_trailer(bytes: &[u8], path: &Path) -> Result<u32, ModelFileError> {
    let len = bytes.len();
    if len < HEADER_LEN + TRAILER_LEN {
        return Err(ModelFileError::Truncated {
            path: path.to_path_buf(),
            len: len as u64,
        });
    }
    let body_end = len - TRAILER_LEN;
    let expected = read_u32(bytes, body_end);
    let found = crc32fast::hash(&bytes[..body_end]);
    let ends_with_marker = bytes[len - END_MAGIC.len()..] == END_MAGIC;
    let damaged = |reason: &str| ModelFileError::DamagedTrailer {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if found == expected && ends_with_marker {
        let reserved = read_u32(bytes, body_end + 4);
        return if reserved == 0 {
            Ok(expected)
        } else {
            Err(damaged(&format!(
                "the reserved word after the checksum is {reserved:#010x}, not zero"
            )))
        };
    }
    if let Some(end) = earlier_model_end(bytes) {
        return Err(ModelFileError::TrailingBytes {
            path: path.to_path_buf(),
            extra: (len - end) as u64,
        });
    }
    Err(match (found == expected, ends_with_marker) {
        (true, _) => damaged("the RSMODEND end marker is damaged"),
        (false, false) => ModelFileError::Truncated {
            path: path.to_path_buf(),
            len: len as u64,
        },
        (false, true) => ModelFileError::Corrupted {
            path: path.to_path_buf(),
            found,
            expected,
        },
    })
}

/// Where a complete model ends when more bytes follow it: the last end
/// marker before the end of `bytes` whose checksum matches what precedes it.
/// Only a few candidates are tried (each costs a checksum of the file).
fn earlier_model_end(bytes: &[u8]) -> Option<usize> {
    let mut search_end = bytes.len().checked_sub(1)?;
    for _ in 0..4 {
        let at = memchr::memmem::rfind(&bytes[..search_end], &END_MAGIC)?;
        if let Some(crc_at) = at.checked_sub(8).filter(|&c| c >= HEADER_LEN) {
            let stored = read_u32(bytes, crc_at);
            let reserved = read_u32(bytes, crc_at + 4);
            if reserved == 0 && crc32fast::hash(&bytes[..crc_at]) == stored {
                return Some(at + END_MAGIC.len());
            }
        }
        search_end = at + END_MAGIC.len() - 1;
    }
    None
}

fn bytes_word(n: &u64) -> &'static str {
    if *n == 1 { "byte" } else { "bytes" }
}

/// The model id for a content checksum.
fn model_id(crc: u32) -> String {
    format!("{crc:08x}")
}

/// What the JSON section holds: the training metadata plus the scalars of the model.
#[derive(serde::Serialize, serde::Deserialize)]
struct MetaSection {
    #[serde(flatten)]
    meta: ModelMeta,
    n_factors: usize,
    global_mean: f32,
    scale: crate::data::RatingScale,
}

impl MetaSection {
    fn of(model: &Model) -> Self {
        MetaSection {
            meta: model.meta.clone(),
            n_factors: model.svd.n_factors,
            global_mean: model.svd.global_mean,
            scale: model.svd.scale,
        }
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn array8(bytes: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    b.copy_from_slice(bytes);
    b
}

/// Plain-old-data values as little-endian bytes.
fn le_bytes<T: bytemuck::Pod + ToLe>(values: &[T]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice(values).to_vec()
    } else {
        values.iter().flat_map(|v| v.to_le_vec()).collect()
    }
}

/// Copies a little-endian section into a vector, whatever its alignment.
fn pod_vec<T: bytemuck::Pod + ToLe>(bytes: &[u8]) -> Result<Vec<T>, String> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) {
        return Err(format!(
            "{} bytes is not a whole number of {size}-byte values",
            bytes.len()
        ));
    }
    let mut values: Vec<T> = bytemuck::pod_collect_to_vec(bytes);
    if cfg!(target_endian = "big") {
        values.iter_mut().for_each(ToLe::swap_from_le);
    }
    Ok(values)
}

/// Byte-order conversion for the value types stored in sections.
trait ToLe: Sized {
    fn to_le_vec(&self) -> Vec<u8>;
    fn swap_from_le(&mut self);
}

macro_rules! impl_to_le {
    ($($t:ty),*) => {$(
        impl ToLe for $t {
            fn to_le_vec(&self) -> Vec<u8> {
                self.to_le_bytes().to_vec()
            }
            fn swap_from_le(&mut self) {
                *self = <$t>::from_le_bytes(self.to_ne_bytes());
            }
        }
    )*};
}
impl_to_le!(f32, u32, u64);

/// `u64 count`, `count + 1` `u64` offsets into the bytes that follow, then the UTF-8 bytes.
fn encode_strings<'a>(strings: impl ExactSizeIterator<Item = &'a str> + Clone) -> Vec<u8> {
    let count = strings.len();
    let mut out = Vec::new();
    out.extend_from_slice(&(count as u64).to_le_bytes());
    let mut offset = 0u64;
    out.extend_from_slice(&offset.to_le_bytes());
    for s in strings.clone() {
        offset += s.len() as u64;
        out.extend_from_slice(&offset.to_le_bytes());
    }
    for s in strings {
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn decode_strings(bytes: &[u8]) -> Result<Vec<String>, String> {
    if bytes.len() < 8 {
        return Err("string list shorter than its count".into());
    }
    let count = u64::from_le_bytes(array8(&bytes[..8]));
    // The count, its `count + 1` offsets and all arithmetic on them come from
    // the file: checked, and compared with the section before any slicing.
    let offsets_end = usize::try_from(count)
        .ok()
        .and_then(|c| c.checked_add(1))
        .and_then(|c| c.checked_mul(8))
        .and_then(|l| l.checked_add(8))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| {
            format!(
                "a list of {count} strings runs past the section ({} bytes)",
                bytes.len()
            )
        })?;
    let offsets: Vec<u64> = pod_vec(&bytes[8..offsets_end])?;
    let text = &bytes[offsets_end..];
    // The writer's strings fill the text exactly: anything else was edited.
    if offsets.first() != Some(&0) || offsets.last() != Some(&(text.len() as u64)) {
        return Err("the string offsets do not span the text".into());
    }
    let mut out = Vec::with_capacity(offsets.len().saturating_sub(1));
    for w in offsets.windows(2) {
        let (start, end) = match (usize::try_from(w[0]), usize::try_from(w[1])) {
            (Ok(start), Ok(end)) if start <= end && end <= text.len() => (start, end),
            _ => return Err("string offsets out of order or out of range".into()),
        };
        let s = std::str::from_utf8(&text[start..end]).map_err(|e| format!("not UTF-8: {e}"))?;
        out.push(s.to_string());
    }
    Ok(out)
}

fn decode_ids(bytes: &[u8]) -> Result<IdMap, String> {
    let ids = decode_strings(bytes)?.into_iter().map(RawId::new).collect();
    IdMap::from_ordered(ids).map_err(|dup| format!("duplicate id {dup}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FitConfig;
    use crate::svd::Hyperparams;
    use crate::synth::{SyntheticSpec, generate};

    fn trained() -> Model {
        let data = generate(&SyntheticSpec {
            users: 60,
            items: 80,
            ratings: 1500,
            seed: 2,
        });
        let titles = [("1".to_string(), "Toy Story (1995)".to_string())]
            .into_iter()
            .collect();
        let config = FitConfig {
            params: Hyperparams {
                n_factors: 10,
                n_epochs: 2,
                ..Hyperparams::with_seed(3)
            },
            threads: 1,
            scale: None,
            titles: Some(&titles),
            source: "synthetic".into(),
        };
        let mut model = Model::fit(&data, &config, &mut |_| {}).unwrap();
        model.seen.insert(0, 79);
        model
    }

    #[test]
    fn save_then_load_gives_back_the_same_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.rsm");
        let mut model = trained();
        save(&mut model, &path).unwrap();
        assert_eq!(model.id.len(), 8);
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.id, model.id);
        assert!(loaded.seen.contains(0, 79));
        // Items rated after training stay apart from the training ones.
        assert_eq!(loaded.seen, model.seen);
        assert_eq!(loaded.seen.added_row(0), &[79]);
        assert!(loaded.svd == model.svd, "factors, biases and counts differ");
        assert!(
            loaded.users == model.users && loaded.items == model.items,
            "id maps differ"
        );
        assert_eq!(loaded.meta, model.meta);
        assert_eq!(loaded.titles, model.titles);
        assert_eq!(loaded.titles[0], "Toy Story (1995)");
    }

    #[test]
    fn every_truncation_is_rejected_cleanly() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        let path = Path::new("m.rsm");
        for cut in (0..bytes.len())
            .step_by(97)
            .chain([bytes.len() - 1, 8, 15, 16])
        {
            let err = decode(&bytes[..cut], path).unwrap_err();
            assert!(
                matches!(
                    err,
                    ModelFileError::Truncated { .. } | ModelFileError::NotAModel { .. }
                ),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn flipped_bytes_are_caught_by_the_checksum() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        for at in (16..bytes.len() - TRAILER_LEN).step_by(131) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            let err = decode(&bad, Path::new("m.rsm")).unwrap_err();
            assert!(
                matches!(err, ModelFileError::Corrupted { .. }),
                "byte {at}: {err}"
            );
            assert!(err.to_string().contains("corrupted"));
        }
    }

    #[test]
    fn other_versions_and_foreign_files_get_clear_errors() {
        let mut bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        bytes[8..12].copy_from_slice(&2u32.to_le_bytes());
        let err = decode(&bytes, Path::new("m.rsm")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "m.rsm: model file format version 2, but this build reads version 1; it was written by a newer recstream, upgrade to read it"
        );
        let err = decode(b"196\t242\t3\t881250949\n", Path::new("u.data")).unwrap_err();
        assert!(matches!(err, ModelFileError::NotAModel { .. }));
    }

    #[test]
    fn a_crafted_file_with_a_valid_checksum_is_still_validated() {
        let mut bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        // Claim a huge first section, then fix up the checksum.
        bytes[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        let end = bytes.len() - TRAILER_LEN;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        let err = decode(&bytes, Path::new("m.rsm")).unwrap_err();
        assert!(matches!(err, ModelFileError::Invalid { .. }), "{err}");
    }

    /// Offset of the body of the section `tag` in an encoded file.
    fn body_at(bytes: &[u8], tag: Tag) -> usize {
        let mut at = HEADER_LEN;
        loop {
            let len = u64::from_le_bytes(array8(&bytes[at + 8..at + 16])) as usize;
            if read_u32(bytes, at) == tag as u32 {
                return at + 16;
            }
            at = (at + 16 + len).next_multiple_of(8);
        }
    }

    /// Recomputes the checksum, as someone crafting a file would.
    fn fix_crc(bytes: &mut [u8]) {
        let end = bytes.len() - TRAILER_LEN;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    }

    /// The sections of an encoded file, as (tag, body).
    fn sections_of(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
        let mut at = HEADER_LEN;
        let mut out = Vec::new();
        for _ in 0..read_u32(bytes, 12) {
            let len = u64::from_le_bytes(array8(&bytes[at + 8..at + 16])) as usize;
            out.push((read_u32(bytes, at), bytes[at + 16..at + 16 + len].to_vec()));
            at = (at + 16 + len).next_multiple_of(8);
        }
        out
    }

    /// A file made of these sections, with a valid checksum and trailer.
    fn assemble(sections: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(sections.len() as u32).to_le_bytes());
        for (tag, body) in sections {
            out.extend_from_slice(&tag.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().next_multiple_of(8), 0);
        }
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&END_MAGIC);
        fix_crc(&mut out);
        out
    }

    /// `bytes` with its metadata JSON edited by `edit`.
    fn with_meta(bytes: &[u8], edit: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
        let mut sections = sections_of(bytes);
        let mut meta: serde_json::Value = serde_json::from_slice(&sections[0].1).unwrap();
        edit(&mut meta);
        sections[0].1 = serde_json::to_vec(&meta).unwrap();
        assemble(&sections)
    }

    fn invalid_reason(result: Result<Model, ModelFileError>) -> String {
        match result {
            Err(ModelFileError::Invalid { reason, .. }) => reason,
            Err(other) => panic!("expected an invalid-file error, got {other:?}"),
            Ok(model) => panic!("expected an invalid-file error, got model {}", model.id),
        }
    }

    #[test]
    fn huge_string_counts_with_a_valid_checksum_are_invalid_not_a_panic() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        // (count + 1) * 8 is the largest multiple of 8 below 2^64 for the
        // first; 8 + that overflows.
        let counts = [(1u64 << 61) - 2, (1 << 61) - 1, u64::MAX, u64::MAX / 8];
        for tag in [Tag::UserIds, Tag::ItemIds, Tag::Titles] {
            for count in counts {
                let mut bad = bytes.clone();
                let at = body_at(&bad, tag);
                bad[at..at + 8].copy_from_slice(&count.to_le_bytes());
                fix_crc(&mut bad);
                let reason = invalid_reason(decode(&bad, Path::new("m.rsm")));
                assert!(
                    reason.contains("past the section"),
                    "{tag:?} {count}: {reason}"
                );
            }
        }
        assert!(decode_strings(&((1u64 << 61) - 2).to_le_bytes()).is_err());
    }

    #[test]
    fn rated_after_training_items_missing_from_the_seen_rows_are_invalid() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        let mut bad = bytes.clone();
        let at = body_at(&bad, Tag::SeenAddedItems);
        // User 0's item 79 becomes 78, which they never rated.
        bad[at..at + 4].copy_from_slice(&78u32.to_le_bytes());
        fix_crc(&mut bad);
        let reason = invalid_reason(decode(&bad, Path::new("m.rsm")));
        assert!(reason.contains("missing from their seen items"), "{reason}");
    }

    #[test]
    fn a_huge_factor_count_with_a_valid_checksum_is_invalid_not_a_panic() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        // 60 users and 80 items times 2^62 wrap to 0 in 64 bits: with empty
        // factor sections an unchecked product "matches".
        let mut sections = sections_of(&bytes);
        for (tag, body) in &mut sections {
            if *tag == Tag::UserFactors as u32 || *tag == Tag::ItemFactors as u32 {
                body.clear();
            }
        }
        for k in [1u64 << 62, u64::MAX, 1 << 40] {
            let bad = with_meta(&assemble(&sections), |m| m["n_factors"] = k.into());
            let reason = invalid_reason(decode(&bad, Path::new("m.rsm")));
            assert!(reason.contains("factors"), "{k}: {reason}");
        }
    }

    #[test]
    fn an_unusable_rating_scale_in_a_crafted_file_is_invalid() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        // min > max would make every clip panic; JSON cannot say NaN, and
        // serde refuses numbers beyond f32.
        let cases = [
            (5.0, 1.0, "rating scale 5..=1"),
            (1.0, 1e39, "number out of range"),
            (-1e39, 5.0, "number out of range"),
        ];
        for (min, max, expected) in cases {
            let bad = with_meta(&bytes, |m| {
                m["scale"] = serde_json::json!({ "min": min, "max": max });
            });
            let reason = invalid_reason(decode(&bad, Path::new("m.rsm")));
            assert!(reason.contains(expected), "{min},{max}: {reason}");
        }
    }

    #[test]
    fn a_huge_section_count_is_refused_without_a_huge_allocation() {
        let mut bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        fix_crc(&mut bytes);
        let reason = invalid_reason(decode(&bytes, Path::new("m.rsm")));
        assert!(reason.contains("section"), "{reason}");
    }

    #[test]
    fn every_byte_of_the_trailer_is_checked() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        for at in bytes.len() - TRAILER_LEN..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut bad = bytes.clone();
                bad[at] ^= bit;
                let err = decode(&bad, Path::new("m.rsm"))
                    .map(|_| ())
                    .expect_err(&format!("byte {at} flipped by {bit:#x} was accepted"));
                assert!(
                    !err.to_string().contains("truncated"),
                    "byte {at} of a whole file: {err}"
                );
            }
        }
    }

    #[test]
    fn appended_bytes_are_reported_as_such_not_as_a_truncation() {
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        for extra in [1usize, 5, 8, 100] {
            let mut bad = bytes.clone();
            bad.extend(std::iter::repeat_n(0x5a, extra));
            let message = decode(&bad, Path::new("m.rsm")).unwrap_err().to_string();
            assert!(!message.contains("truncated"), "{message}");
            assert!(
                message.contains(&format!("{extra} unexpected byte")),
                "{message}"
            );
        }
        // Appending a second copy of the end marker is still appended data.
        let mut bad = bytes.clone();
        bad.extend_from_slice(&END_MAGIC);
        let message = decode(&bad, Path::new("m.rsm")).unwrap_err().to_string();
        assert!(!message.contains("truncated"), "{message}");
    }

    #[test]
    fn non_finite_parameters_are_neither_written_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let good = trained();
        type Spoil = fn(&mut SvdModel);
        let bad_models: [(&str, Spoil); 4] = [
            ("user biases", |s| s.user_bias[3] = f32::NAN),
            ("item biases", |s| s.item_bias[0] = f32::INFINITY),
            ("user factors", |s| s.user_factors[7] = f32::NEG_INFINITY),
            ("item factors", |s| s.item_factors[11] = f32::NAN),
        ];
        for (what, spoil) in bad_models {
            let mut model = good.clone();
            spoil(&mut model.svd);
            let path = dir.path().join("nan.rsm");
            let err = save(&mut model, &path).unwrap_err();
            assert!(err.to_string().contains(what), "{what}: {err}");
            assert!(!path.exists(), "{what}: a file was written");
            assert!(encode(&model, &path).is_err(), "{what}: encoded");
        }
        // The same, crafted into a file with a valid checksum.
        let bytes = encode(&good, Path::new("m.rsm")).unwrap();
        for (tag, what) in [
            (Tag::UserBias, "user biases"),
            (Tag::ItemBias, "item biases"),
            (Tag::UserFactors, "user factors"),
            (Tag::ItemFactors, "item factors"),
        ] {
            for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                let mut bad = bytes.clone();
                let at = body_at(&bad, tag) + 4;
                bad[at..at + 4].copy_from_slice(&value.to_le_bytes());
                fix_crc(&mut bad);
                let reason = invalid_reason(decode(&bad, Path::new("m.rsm")));
                assert_eq!(
                    reason,
                    format!("non-finite parameters (NaN or infinity) in {what}")
                );
            }
        }
        // JSON has no NaN or infinity (a NaN is written as null), and serde
        // refuses numbers beyond f32: a non-finite global mean cannot be read.
        for mean in [serde_json::Value::Null, 1e39.into()] {
            let bad = with_meta(&bytes, |m| m["global_mean"] = mean.clone());
            let reason = invalid_reason(decode(&bad, Path::new("m.rsm")));
            assert!(reason.starts_with("metadata: "), "{reason}");
        }
    }

    #[test]
    fn a_string_list_with_unused_bytes_is_invalid() {
        // Found by the fuzz suite: lengthening the titles section into its
        // zero padding left bytes no string used, and the file still loaded.
        let bytes = encode(&trained(), Path::new("m.rsm")).unwrap();
        let mut sections = sections_of(&bytes);
        assert_eq!(sections[3].0, Tag::Titles as u32);
        sections[3].1.push(0);
        let bad = assemble(&sections);
        let reason = invalid_reason(decode(&bad, Path::new("m.rsm")));
        assert_eq!(reason, "titles: the string offsets do not span the text");
        // And a list whose first string does not start at 0.
        let mut list = encode_strings(["ab", "c"].into_iter());
        list[8] = 1;
        assert!(decode_strings(&list).is_err());
    }

    #[test]
    fn files_without_the_import_record_still_load_and_imported_models_round_trip() {
        // A file as written before imports existed: its metadata has no
        // "imported" key at all.
        let model = trained();
        let bytes = encode(&model, Path::new("m.rsm")).unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&sections_of(&bytes)[0].1).unwrap();
        assert!(meta.get("imported").is_none(), "{meta}");
        assert_eq!(
            decode(&bytes, Path::new("m.rsm")).unwrap().meta.imported,
            None
        );
        // And the record survives saving and loading.
        let mut imported = model.clone();
        imported.meta.imported = Some(crate::model::ImportedFrom {
            library: "scikit-surprise 1.1.5".into(),
            algorithm: "SVD".into(),
            file: "svd.npz".into(),
            random_state: Some(7),
        });
        let bytes = encode(&imported, Path::new("m.rsm")).unwrap();
        let loaded = decode(&bytes, Path::new("m.rsm")).unwrap();
        assert_eq!(loaded.meta, imported.meta);
    }

    #[test]
    fn string_lists_round_trip() {
        let strings = ["", "Kolya (1996)", "Misérables, Les (1995)"];
        let bytes = encode_strings(strings.iter().copied());
        assert_eq!(decode_strings(&bytes).unwrap(), strings);
        assert!(decode_strings(&bytes[..bytes.len() - 1]).is_err());
    }
}
