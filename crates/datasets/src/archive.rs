//! Extracts named members of a zip archive (a data set zip or a Python wheel) into a folder.
//!
//! Only the members asked for are written, each under a fixed local name (so a
//! crafted archive cannot write outside the target), and each through a
//! temporary file renamed into place, so an interrupted fetch never leaves a
//! half-written file that a later run would take for a complete one.

use std::io::{Cursor, Read, Write};
use std::path::{Path, PathBuf};

/// Writes each `(member, local name)` of `zip` into `dir`; returns the paths in order.
pub fn extract(zip: &[u8], members: &[(&str, &str)], dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(zip))
        .map_err(|e| format!("not a valid zip archive: {e}"))?;
    let mut paths = Vec::with_capacity(members.len());
    for (member, local) in members {
        let mut entry = archive
            .by_name(member)
            .map_err(|e| format!("archive has no {member}: {e}"))?;
        let mut bytes =
            Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0).min(64 << 20));
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot extract {member}: {e}"))?;
        let path = dir.join(local);
        write_atomically(&path, &bytes)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        paths.push(path);
    }
    Ok(paths)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    // Temporary files are private (0600); a data file is not.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;

    fn zip_of(files: &[(&str, &str)]) -> Vec<u8> {
        let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
        for (name, body) in files {
            out.start_file(*name, SimpleFileOptions::default()).unwrap();
            out.write_all(body.as_bytes()).unwrap();
        }
        out.finish().unwrap().into_inner()
    }

    #[test]
    fn extracts_only_the_named_members_under_local_names() {
        let zip = zip_of(&[
            ("a/u.data", "1\t2\t3\t4\n"),
            ("a/other", "x"),
            ("../evil", "y"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let paths = extract(&zip, &[("a/u.data", "u.data")], dir.path()).unwrap();
        assert_eq!(paths, vec![dir.path().join("u.data")]);
        assert_eq!(std::fs::read_to_string(&paths[0]).unwrap(), "1\t2\t3\t4\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn missing_members_and_garbage_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let zip = zip_of(&[("x", "y")]);
        assert!(
            extract(&zip, &[("u.data", "u.data")], dir.path())
                .unwrap_err()
                .contains("has no u.data")
        );
        assert!(
            extract(b"not a zip", &[("u.data", "u.data")], dir.path())
                .unwrap_err()
                .contains("not a valid zip")
        );
    }
}
