//! NumPy's `.npz` archives: a zip of `.npy` arrays, one per name.
//!
//! `np.savez` stores its members uncompressed and `np.savez_compressed`
//! deflates them; both are read, by name, one array at a time. A member's
//! declared size comes from the file, so the buffer it is read into never
//! starts larger than what its compressed bytes could possibly inflate to
//! (deflate cannot expand more than 1032 to 1), and the `.npy` reader then
//! checks the array against the bytes actually read. The writer stores its
//! members uncompressed, as `np.savez` does, so `np.load` maps them
//! straight away.

use std::io::{Read, Seek, Write};

use crate::npy::{NpyArray, NpyError, NpyOut, encode};

/// The most a deflated byte can expand to.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Why an archive or one of its arrays could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NpzError {
    /// The bytes are not a readable zip archive, or a member is damaged.
    #[error("not a readable .npz (zip) archive: {0}")]
    Zip(String),
    /// A member is not a valid `.npy` array.
    #[error("array {name:?}: {source}")]
    Array {
        /// The array's name (its member name without `.npy`).
        name: String,
        /// What is wrong with it.
        #[source]
        source: NpyError,
    },
    /// Writing the archive failed.
    #[error("writing the archive: {0}")]
    Write(String),
}

/// Reads the arrays of an `.npz` archive by name.
pub struct NpzReader<R: Read + Seek> {
    archive: zip::ZipArchive<R>,
}

impl<R: Read + Seek> NpzReader<R> {
    /// Opens an archive (reads its central directory).
    pub fn new(reader: R) -> Result<Self, NpzError> {
        let archive = zip::ZipArchive::new(reader).map_err(|e| NpzError::Zip(e.to_string()))?;
        Ok(NpzReader { archive })
    }

    /// The array names in the archive.
    pub fn names(&self) -> Vec<String> {
        self.archive
            .file_names()
            .filter_map(|n| n.ok()?.strip_suffix(".npy").map(str::to_string))
            .collect()
    }

    /// The array `name` (member `name.npy`), or `None` when there is none.
    pub fn get(&mut self, name: &str) -> Result<Option<NpyArray>, NpzError> {
        let member = format!("{name}.npy");
        let mut entry = match self.archive.by_name(&member) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(NpzError::Zip(format!("{member}: {e}"))),
        };
        // The declared size is only a hint: never reserve more than the
        // member's compressed bytes can produce.
        let limit = entry
            .compressed_size()
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(64);
        let hint = usize::try_from(entry.size().min(limit)).unwrap_or(0);
        let mut bytes = Vec::with_capacity(hint);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| NpzError::Zip(format!("{member}: {e}")))?;
        NpyArray::parse(&bytes)
            .map(Some)
            .map_err(|source| NpzError::Array {
                name: name.to_string(),
                source,
            })
    }
}

/// Writes arrays into a new `.npz` archive, uncompressed like `np.savez`.
pub struct NpzWriter<W: Write + Seek> {
    zip: zip::ZipWriter<W>,
}

impl<W: Write + Seek> NpzWriter<W> {
    /// Starts an archive on `out`.
    pub fn new(out: W) -> Self {
        NpzWriter {
            zip: zip::ZipWriter::new(out),
        }
    }

    /// Adds the array `name` with this shape.
    pub fn add(&mut self, name: &str, array: NpyOut<'_>, shape: &[usize]) -> Result<(), NpzError> {
        let bytes = encode(array, shape);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored)
            // Members of 4 GiB and more need the zip64 extension.
            .large_file(bytes.len() as u64 >= u64::from(u32::MAX));
        let write = |e: &dyn std::fmt::Display| NpzError::Write(format!("{name}: {e}"));
        self.zip
            .start_file(format!("{name}.npy"), options)
            .map_err(|e| write(&e))?;
        self.zip.write_all(&bytes).map_err(|e| write(&e))?;
        Ok(())
    }

    /// Writes the central directory and returns the output.
    pub fn finish(self) -> Result<W, NpzError> {
        self.zip
            .finish()
            .map_err(|e| NpzError::Write(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::npy::NpyData;
    use proptest::prelude::*;

    fn archive() -> Vec<u8> {
        let mut out = NpzWriter::new(Cursor::new(Vec::new()));
        out.add("pu", NpyOut::F32(&[1.0, 2.0, 3.0, 4.0]), &[2, 2])
            .unwrap();
        out.add("user_ids", NpyOut::Str(&["196", "186"]), &[2])
            .unwrap();
        out.finish().unwrap().into_inner()
    }

    #[test]
    fn arrays_are_read_back_by_name() {
        let mut npz = NpzReader::new(Cursor::new(archive())).unwrap();
        let mut names = npz.names();
        names.sort();
        assert_eq!(names, ["pu", "user_ids"]);
        let pu = npz.get("pu").unwrap().unwrap();
        assert_eq!(
            (pu.shape, pu.data),
            (vec![2, 2], NpyData::Float(vec![1.0, 2.0, 3.0, 4.0]))
        );
        assert!(npz.get("qi").unwrap().is_none());
    }

    #[test]
    fn deflated_members_are_read_too() {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        out.start_file("bu.npy", options).unwrap();
        out.write_all(&encode(NpyOut::F64(&[0.5; 100]), &[100]))
            .unwrap();
        let bytes = out.finish().unwrap().into_inner();
        let mut npz = NpzReader::new(Cursor::new(bytes)).unwrap();
        assert_eq!(
            npz.get("bu").unwrap().unwrap().data,
            NpyData::Float(vec![0.5; 100])
        );
    }

    #[test]
    fn a_member_that_is_not_an_array_is_named_in_the_error() {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        out.start_file("bi.npy", zip::write::SimpleFileOptions::default())
            .unwrap();
        out.write_all(b"196\t242\t3\n").unwrap();
        let bytes = out.finish().unwrap().into_inner();
        let err = NpzReader::new(Cursor::new(bytes))
            .unwrap()
            .get("bi")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "array \"bi\": not a .npy array (no \\x93NUMPY magic)"
        );
    }

    /// Reads every array, as an import does; any error is fine, a panic is not.
    fn read_all(bytes: Vec<u8>) -> Result<usize, NpzError> {
        let mut npz = NpzReader::new(Cursor::new(bytes))?;
        let mut n = 0;
        for name in npz.names() {
            n += npz.get(&name)?.map_or(0, |a| a.len());
        }
        Ok(n)
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let bytes = archive();
        for cut in 0..bytes.len() {
            assert!(read_all(bytes[..cut].to_vec()).is_err(), "cut at {cut}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::testing::fuzz_cases()))]

        #[test]
        fn flipped_bits_never_panic(at in 0usize..4096, bit in 0u8..8) {
            let mut bytes = archive();
            let at = at % bytes.len();
            bytes[at] ^= 1 << bit;
            let _ = read_all(bytes);
        }

        #[test]
        fn overwritten_sizes_never_panic(at in 0usize..4096, value in any::<u32>()) {
            let mut bytes = archive();
            let at = at % (bytes.len() - 4);
            bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let _ = read_all(bytes);
        }
    }
}
