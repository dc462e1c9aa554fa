//! Fetches public rating data sets for recstream, so nobody has to commit or mail them around.
//!
//! MovieLens may not be redistributed, so the repository never contains it:
//! [`fetch_ml100k`] downloads it on the user's machine, first from the
//! official GroupLens archive and, where that host cannot be reached (closed
//! networks that only allow package registries), from the copy RecBole ships
//! inside its wheel on PyPI, verified against the SHA-256 digest PyPI
//! publishes for it. Files land in `DIR/ml-100k/`; a second call finds them
//! there and does not download again. This crate only moves bytes: reading
//! the files is the recommender core's job.

mod archive;
mod http;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use http::Http;

/// Where the official archive lives.
pub const GROUPLENS_ML100K_URL: &str = "https://files.grouplens.org/datasets/movielens/ml-100k.zip";
/// The package index queried for the RecBole wheel.
pub const DEFAULT_PYPI_URL: &str = "https://pypi.org";
/// The RecBole release whose wheel carries ML-100K.
pub const RECBOLE_VERSION: &str = "1.2.1";

/// Where a data set came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// files.grouplens.org: `u.data` and `u.item`.
    GroupLens,
    /// RecBole's wheel on PyPI: `ml-100k.inter` and `ml-100k.item`.
    RecboleWheel {
        /// The wheel's file name.
        wheel: String,
    },
    /// Found in the target folder from an earlier fetch.
    AlreadyPresent,
}

/// The files of a fetched data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The ratings file.
    pub ratings: PathBuf,
    /// The item (title) file.
    pub items: PathBuf,
    /// Where they came from.
    pub source: Source,
}

/// Where to fetch from and to.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The folder that receives `ml-100k/`.
    pub dir: PathBuf,
    /// The GroupLens archive URL.
    pub grouplens_url: String,
    /// The package index base URL.
    pub pypi_url: String,
    /// How long to wait for a host to answer before trying the next source.
    pub connect_timeout: Duration,
    /// Download again even when the files are present.
    pub force: bool,
}

impl FetchOptions {
    /// Defaults for a target folder.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FetchOptions {
            dir: dir.into(),
            grouplens_url: GROUPLENS_ML100K_URL.into(),
            pypi_url: DEFAULT_PYPI_URL.into(),
            connect_timeout: Duration::from_secs(8),
            force: false,
        }
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every source failed; each attempt says why.
    #[error("could not fetch MovieLens 100K from any source:\n  - {}", .attempts.join("\n  - "))]
    Unreachable {
        /// One line per source tried.
        attempts: Vec<String>,
    },
    /// A local file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// The file names each source provides, inside `DIR/ml-100k/`.
const GROUPLENS_FILES: [(&str, &str); 2] =
    [("ml-100k/u.data", "u.data"), ("ml-100k/u.item", "u.item")];
const RECBOLE_FILES: [(&str, &str); 2] = [
    (
        "recbole/dataset_example/ml-100k/ml-100k.inter",
        "ml-100k.inter",
    ),
    (
        "recbole/dataset_example/ml-100k/ml-100k.item",
        "ml-100k.item",
    ),
];

/// What a fetch reports as it goes, for the user to see what happens on a
/// slow network. A closure taking the step lines is one.
pub trait FetchProgress {
    /// One line per step ("downloading URL").
    fn step(&mut self, line: &str);
    /// `received` bytes of the current download so far, of `total` when the server said.
    fn bytes(&mut self, received: u64, total: Option<u64>) {
        let _ = (received, total);
    }
}

impl<F: FnMut(&str)> FetchProgress for F {
    fn step(&mut self, line: &str) {
        self(line);
    }
}

/// Makes MovieLens 100K available in `options.dir/ml-100k/`, telling
/// `progress` each step and the bytes of each download.
pub fn fetch_ml100k(
    options: &FetchOptions,
    progress: &mut dyn FetchProgress,
) -> Result<Fetched, FetchError> {
    let target = options.dir.join("ml-100k");
    if !options.force {
        for files in [GROUPLENS_FILES, RECBOLE_FILES] {
            let (ratings, items) = (target.join(files[0].1), target.join(files[1].1));
            if ratings.is_file() && items.is_file() {
                return Ok(Fetched {
                    ratings,
                    items,
                    source: Source::AlreadyPresent,
                });
            }
        }
    }
    std::fs::create_dir_all(&target).map_err(|source| FetchError::Io {
        path: target.clone(),
        source,
    })?;
    let http = Http::new(options.connect_timeout);
    let mut attempts = Vec::new();

    progress.step(&format!("downloading {}", options.grouplens_url));
    match http.get_bytes_reporting(&options.grouplens_url, &mut |n, total| {
        progress.bytes(n, total)
    }) {
        Ok(zip) => match archive::extract(&zip, &GROUPLENS_FILES, &target) {
            Ok(paths) => return Ok(fetched(paths, Source::GroupLens)),
            Err(e) => attempts.push(format!("{}: {e}", options.grouplens_url)),
        },
        Err(e) => attempts.push(format!("{}: {e}", options.grouplens_url)),
    }

    let project = format!("{}/simple/recbole/", options.pypi_url.trim_end_matches('/'));
    progress.step(&format!(
        "GroupLens unreachable; trying RecBole {RECBOLE_VERSION}'s wheel from {project}"
    ));
    match recbole_wheel(&http, &project, &target, progress) {
        Ok((paths, wheel)) => Ok(fetched(paths, Source::RecboleWheel { wheel })),
        Err(e) => {
            attempts.push(format!("{project}: {e}"));
            Err(FetchError::Unreachable { attempts })
        }
    }
}

fn fetched(paths: Vec<PathBuf>, source: Source) -> Fetched {
    let mut paths = paths.into_iter();
    Fetched {
        ratings: paths.next().unwrap_or_default(),
        items: paths.next().unwrap_or_default(),
        source,
    }
}

/// Finds the wheel in the index's project page (the JSON form of the
/// "simple" API that pip itself uses, PEP 691), downloads it, checks its
/// SHA-256 against the index and extracts the two files.
fn recbole_wheel(
    http: &Http,
    project_url: &str,
    target: &Path,
    progress: &mut dyn FetchProgress,
) -> Result<(Vec<PathBuf>, String), String> {
    #[derive(serde::Deserialize)]
    struct Project {
        files: Vec<ProjectFile>,
    }
    #[derive(serde::Deserialize)]
    struct ProjectFile {
        filename: String,
        url: String,
        hashes: Hashes,
    }
    #[derive(serde::Deserialize)]
    struct Hashes {
        sha256: Option<String>,
    }
    let body = http.get_bytes_accepting(project_url, "application/vnd.pypi.simple.v1+json")?;
    let project: Project =
        serde_json::from_slice(&body).map_err(|e| format!("unexpected index answer: {e}"))?;
    let wanted = format!("recbole-{RECBOLE_VERSION}-py3-none-any.whl");
    let wheel = project
        .files
        .into_iter()
        .find(|f| f.filename == wanted)
        .ok_or_else(|| format!("the index lists no {wanted}"))?;
    let expected = wheel
        .hashes
        .sha256
        .ok_or("the index gives no SHA-256 for the wheel")?;
    let url = resolve(project_url, &wheel.url);
    progress.step(&format!("downloading {url}"));
    let bytes = http.get_bytes_reporting(&url, &mut |n, total| progress.bytes(n, total))?;
    let digest = http::sha256_hex(&bytes);
    if !digest.eq_ignore_ascii_case(&expected) {
        return Err(format!(
            "{wanted} has SHA-256 {digest}, but the index says {expected}; not using it"
        ));
    }
    let paths = archive::extract(&bytes, &RECBOLE_FILES, target)?;
    Ok((paths, wanted))
}

/// File URLs in the simple API may be relative to the project page.
fn resolve(base: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    if let Some(rest) = url.strip_prefix('/') {
        let origin_end = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[origin_end..]
            .find('/')
            .map_or(base.len(), |i| origin_end + i);
        return format!("{}/{rest}", &base[..host_end]);
    }
    format!("{}/{url}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_file_urls_resolve_against_the_index() {
        let base = "https://mirror.example/simple/recbole/";
        assert_eq!(
            resolve(base, "https://files.example/x.whl"),
            "https://files.example/x.whl"
        );
        assert_eq!(
            resolve(base, "/packages/x.whl"),
            "https://mirror.example/packages/x.whl"
        );
        assert_eq!(
            resolve(base, "../../packages/x.whl"),
            "https://mirror.example/simple/recbole/../../packages/x.whl"
        );
    }

    #[test]
    fn files_already_present_are_not_fetched_again() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ml-100k");
        std::fs::create_dir_all(&target).unwrap();
        std::fs::write(target.join("u.data"), "1\t2\t3\t4\n").unwrap();
        std::fs::write(target.join("u.item"), "2|x|\n").unwrap();
        let options = FetchOptions {
            grouplens_url: "http://127.0.0.1:9/".into(),
            ..FetchOptions::new(dir.path())
        };
        let fetched = fetch_ml100k(&options, &mut |_: &str| {}).unwrap();
        assert_eq!(fetched.source, Source::AlreadyPresent);
        assert_eq!(fetched.ratings, target.join("u.data"));
    }

    #[test]
    fn unreachable_sources_are_all_reported() {
        let dir = tempfile::tempdir().unwrap();
        let options = FetchOptions {
            grouplens_url: "http://127.0.0.1:9/ml-100k.zip".into(),
            pypi_url: "http://127.0.0.1:9".into(),
            ..FetchOptions::new(dir.path())
        };
        let err = fetch_ml100k(&options, &mut |_: &str| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("127.0.0.1:9/ml-100k.zip") && err.contains("127.0.0.1:9/simple/recbole/"),
            "{err}"
        );
    }
}
