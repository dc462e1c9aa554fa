//! Fuzzing the `.rsm` model file decoder with proptest (stable Rust, no nightly).
//!
//! Every case starts from a small valid model file and damages it: cuts,
//! bit flips, byte overwrites, and huge lengths and counts written into the
//! section headers and bodies with the checksum recomputed, so the decoder
//! has to validate the content itself. Each decode must return a model that
//! serves, or a `ModelFileError`; it must never panic, and never allocate
//! more than a small multiple of the file (a global allocator here records
//! the largest single allocation made by the decoding thread).
//!
//! Cases per property: 10,000 when `CI` is set, 1,000 otherwise;
//! `PROPTEST_CASES` overrides both.

// Test helpers: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;
use std::sync::OnceLock;

use proptest::prelude::*;
use recstream_core::modelfile::{END_MAGIC, ModelFileError, decode, encode};
use recstream_core::synth::{SyntheticSpec, generate};
use recstream_core::{FitConfig, Hyperparams, Model, Recommender};

/// The system allocator, noting the largest request of each thread.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: the slot may be gone while a thread shuts down.
    let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

const HEADER_LEN: usize = 16;
const TRAILER_LEN: usize = 16;
/// The id lookup table for small integer ids may take up to 16 MiB by design.
const FIXED_ALLOWANCE: usize = 20 << 20;

mod common;

fn config() -> ProptestConfig {
    common::fuzz_config()
}

/// A small trained model file: titles with multi-byte UTF-8, an online
/// overlay of seen items, every section non-empty.
fn valid_file() -> &'static [u8] {
    static FILE: OnceLock<Vec<u8>> = OnceLock::new();
    FILE.get_or_init(|| {
        let data = generate(&SyntheticSpec {
            users: 12,
            items: 15,
            ratings: 80,
            seed: 5,
        });
        let config = FitConfig {
            params: Hyperparams {
                n_factors: 3,
                n_epochs: 2,
                ..Hyperparams::with_seed(1)
            },
            threads: 1,
            scale: None,
            titles: None,
            source: "fuzz".into(),
        };
        let mut model = Model::fit(&data, &config, &mut |_| {}).unwrap();
        for (i, title) in model.titles.iter_mut().enumerate() {
            *title = format!("Misérables {i} (1995)");
        }
        model.seen.insert(0, 14);
        encode(&model, Path::new("fuzz.rsm")).unwrap()
    })
}

/// Decodes, checking that nothing panicked (proptest reports a panic as a
/// failure), that no allocation was out of proportion to the file, that an
/// error names the file, and that a model that loads is usable.
fn decode_checked(bytes: &[u8]) -> Result<Model, ModelFileError> {
    LARGEST.with(|l| l.set(0));
    let result = decode(bytes, Path::new("fuzz.rsm"));
    let largest = LARGEST.with(Cell::get);
    let bound = 16 * bytes.len() + FIXED_ALLOWANCE;
    assert!(
        largest <= bound,
        "decoding {} bytes allocated {largest} bytes at once",
        bytes.len()
    );
    match &result {
        Err(e) => {
            let message = e.to_string();
            assert!(message.starts_with("fuzz.rsm: "), "{message}");
        }
        Ok(model) => {
            model.check_consistency().unwrap();
            assert_eq!(model.svd.non_finite_parameters(), None);
            model.svd.scale.check().unwrap();
            let uid = model.users.raw(0).map(|id| id.to_string());
            let recommender = Recommender::new(model.clone());
            for uid in uid.iter().map(String::as_str).chain(["nobody"]) {
                let answer = recommender.recommend(uid, 5);
                assert!(answer.recommendations.iter().all(|r| r.score.is_finite()));
            }
        }
    }
    result
}

/// Recomputes the checksum, as someone crafting a file would.
fn fix_crc(bytes: &mut [u8]) {
    if bytes.len() >= HEADER_LEN + TRAILER_LEN {
        let end = bytes.len() - TRAILER_LEN;
        let crc = crc32fast::hash(&bytes[..end]);
        bytes[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// (offset of the section header, tag, body) of each section of a valid file.
fn sections_of(bytes: &[u8]) -> Vec<(usize, u32, Vec<u8>)> {
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut at = HEADER_LEN;
    let mut out = Vec::new();
    for _ in 0..u32_at(12) {
        let len = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().unwrap()) as usize;
        out.push((at, u32_at(at), bytes[at + 16..at + 16 + len].to_vec()));
        at = (at + 16 + len).next_multiple_of(8);
    }
    out
}

/// A file of these sections (the header of `valid_file`), with a valid
/// checksum and trailer.
fn assemble(sections: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = valid_file()[..12].to_vec();
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

/// Lengths and counts that break unchecked arithmetic, and ordinary ones.
fn nasty_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - 7),
        Just(u64::MAX / 8),
        Just((1 << 61) - 2),
        Just((1 << 61) - 1),
        Just(1 << 62),
        Just(1 << 63),
        Just(u64::from(u32::MAX)),
        Just(u64::from(u32::MAX) + 1),
        0u64..4096,
        any::<u64>(),
    ]
}

#[test]
fn every_truncation_is_a_clean_error() {
    let bytes = valid_file();
    for cut in 0..bytes.len() {
        let err = decode_checked(&bytes[..cut]).map(|_| ()).unwrap_err();
        assert!(
            matches!(
                err,
                ModelFileError::Truncated { .. } | ModelFileError::NotAModel { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
    decode_checked(bytes).unwrap();
}

proptest! {
    #![proptest_config(config())]

    /// Up to three flipped bits are always caught (CRC-32 detects them all
    /// at this length), whatever part of the file they hit.
    #[test]
    fn flipped_bits_are_always_refused(
        flips in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..=3)
    ) {
        let original = valid_file();
        let mut bytes = original.to_vec();
        for (at, bit) in &flips {
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
        }
        let result = decode_checked(&bytes);
        if bytes != original {
            prop_assert!(result.is_err());
        }
    }

    /// Arbitrary overwrites with a recomputed checksum reach the content checks.
    #[test]
    fn overwritten_bytes_with_a_valid_checksum_never_panic(
        writes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..16),
        fix in any::<bool>(),
    ) {
        let mut bytes = valid_file().to_vec();
        for (at, value) in &writes {
            let at = at.index(bytes.len());
            bytes[at] = *value;
        }
        if fix {
            fix_crc(&mut bytes);
        }
        let _ = decode_checked(&bytes);
    }

    /// Huge, misaligned or off-by-some lengths in any section header.
    #[test]
    fn huge_section_lengths_are_refused(section in 0usize..12, len in nasty_u64()) {
        let original = valid_file();
        let mut bytes = original.to_vec();
        let (at, _, _) = sections_of(original)[section];
        bytes[at + 8..at + 16].copy_from_slice(&len.to_le_bytes());
        fix_crc(&mut bytes);
        let result = decode_checked(&bytes);
        if bytes != original {
            prop_assert!(result.is_err());
        }
    }

    /// Huge counts where the decoder reads one: the section count of the
    /// header, the count of a string list, and any u64 of a section body
    /// (string offsets, seen-items offsets).
    #[test]
    fn huge_counts_and_offsets_are_refused(
        section in 0usize..12,
        word in any::<prop::sample::Index>(),
        value in nasty_u64(),
        sections in any::<u32>(),
        header in any::<bool>(),
    ) {
        let original = valid_file();
        let mut bytes = original.to_vec();
        if header {
            bytes[12..16].copy_from_slice(&sections.to_le_bytes());
        } else {
            let (at, _, body) = &sections_of(original)[section];
            if body.len() >= 8 {
                let start = at + 16 + 8 * word.index(body.len() / 8);
                bytes[start..start + 8].copy_from_slice(&value.to_le_bytes());
            }
        }
        fix_crc(&mut bytes);
        let _ = decode_checked(&bytes);
    }

    /// A section replaced by arbitrary bytes, or dropped, or duplicated, in a
    /// file rebuilt with valid framing and checksum.
    #[test]
    fn arbitrary_section_bodies_never_panic(
        section in 0usize..12,
        body in prop::collection::vec(any::<u8>(), 0..300),
        action in 0u8..3,
    ) {
        let mut sections: Vec<(u32, Vec<u8>)> = sections_of(valid_file())
            .into_iter()
            .map(|(_, tag, body)| (tag, body))
            .collect();
        match action {
            0 => sections[section].1 = body,
            1 => { sections.remove(section); }
            _ => { let copy = sections[section].clone(); sections.insert(0, copy); }
        }
        let _ = decode_checked(&assemble(&sections));
    }

    /// The metadata JSON with hostile scalars: factor counts, scales, means.
    #[test]
    fn hostile_metadata_never_panics(
        n_factors in nasty_u64(),
        min in any::<f32>(),
        max in any::<f32>(),
        mean in any::<f32>(),
        which in 0u8..4,
    ) {
        let mut sections: Vec<(u32, Vec<u8>)> = sections_of(valid_file())
            .into_iter()
            .map(|(_, tag, body)| (tag, body))
            .collect();
        let mut meta: serde_json::Value = serde_json::from_slice(&sections[0].1).unwrap();
        match which {
            0 => meta["n_factors"] = n_factors.into(),
            1 => meta["scale"] = serde_json::json!({ "min": min, "max": max }),
            2 => meta["global_mean"] = serde_json::json!(mean),
            _ => meta["n_factors"] = serde_json::json!(n_factors as i64),
        }
        sections[0].1 = serde_json::to_vec(&meta).unwrap();
        let _ = decode_checked(&assemble(&sections));
    }

    /// Whatever follows the header, with a valid trailer.
    #[test]
    fn arbitrary_content_after_the_header_never_panics(
        content in prop::collection::vec(any::<u8>(), 0..600),
        count in 0u32..20,
    ) {
        let mut bytes = valid_file()[..12].to_vec();
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&content);
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&END_MAGIC);
        fix_crc(&mut bytes);
        let _ = decode_checked(&bytes);
    }

    /// Bytes appended to a whole file are reported as such.
    #[test]
    fn appended_bytes_are_named_as_such(extra in prop::collection::vec(any::<u8>(), 1..64)) {
        let mut bytes = valid_file().to_vec();
        bytes.extend_from_slice(&extra);
        let message = decode_checked(&bytes).map(|_| ()).unwrap_err().to_string();
        prop_assert!(!message.contains("truncated"), "{}", message);
    }
}
