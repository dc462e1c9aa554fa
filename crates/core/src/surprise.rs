//! scikit-surprise `SVD` models in and out, through a documented `.npz`.
//!
//! Data scientists tune an `SVD` in a notebook; `python/recstream_surprise.py`
//! exports it (`export(algo, trainset, path)`) to an `.npz` that [`import`]
//! turns into a [`Model`], and [`export`] writes a model back in the same
//! format for analysis with numpy. The format is plain arrays rather than
//! pickles so that neither side runs code from the file, and every field is
//! checked here before it is believed.
//!
//! The arrays (`n_users`, `n_items` and `k` = `n_factors` are taken from the
//! shapes; surprise's inner ids are the row numbers):
//!
//! | name | dtype | shape | |
//! |---|---|---|---|
//! | `pu`, `qi` | float | (n_users, k), (n_items, k) | user and item factors |
//! | `bu`, `bi` | float | (n_users,), (n_items,) | user and item biases |
//! | `global_mean` | float | () | mean training rating |
//! | `user_ids`, `item_ids` | str | (n_users,), (n_items,) | raw ids in inner order |
//! | `rating_scale` | float | (2,) | lowest and highest rating |
//! | `format_version` | int | () | optional; 1 |
//! | `user_n_ratings`, `item_n_ratings` | int | (n_users,), (n_items,) | optional; training ratings per row (0 = unknown); 1 when absent |
//! | `seen_offsets`, `seen_items` | int | (n_users + 1,), (n_seen,) | optional; items each user rated in training, as sorted CSR rows of inner item ids |
//! | `titles` | str | (n_items,) | optional; "" when unknown |
//! | `n_epochs`, `biased`, `init_mean`, `init_std_dev`, `lr_bu`, `lr_bi`, `lr_pu`, `lr_qi`, `reg_bu`, `reg_bi`, `reg_pu`, `reg_qi`, `random_state` | int, bool or float | () | optional; hyper-parameters, surprise's defaults when absent |
//! | `n_ratings` | int | () | optional; size of the training set |
//! | `library`, `algorithm` | str | () | optional; e.g. "scikit-surprise 1.1.5", "SVD" |
//!
//! "float" is `<f8` or `<f4` (surprise's arrays are `<f8`; recstream writes
//! its `f32` parameters as `<f4`, exactly), "int" any integer width, "str"
//! NumPy's `<U` strings. Scores: recstream's estimate is surprise's
//! `SVD.estimate` (mean, plus the bias of each known side, plus the dot
//! product when both are known), clipped to the rating scale like
//! `predict`. One difference remains for `biased=False`: surprise scores a
//! pair with an unknown side as the global mean, recstream as the bare
//! (zero) estimate clipped to the scale; [`import`] says so in a warning.

use std::fs::File;
use std::io::{BufReader, BufWriter, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::data::{ItemTitles, RatingScale};
use crate::ids::{IdMap, RawId};
use crate::model::{ImportedFrom, Model, ModelMeta};
use crate::npy::{NpyArray, NpyData, NpyOut};
use crate::npz::{NpzError, NpzReader, NpzWriter};
use crate::seen::SeenItems;
use crate::svd::{Hyperparams, SvdModel};

/// The `format_version` this build writes and reads.
pub const FORMAT_VERSION: i64 = 1;

/// Why a surprise `.npz` could not be imported or written.
#[derive(Debug, thiserror::Error)]
pub enum SurpriseError {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The archive or one of its arrays cannot be read.
    #[error("{path}: {source}")]
    Npz {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: NpzError,
    },
    /// The arrays are readable but do not make a model.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is missing or inconsistent.
        reason: String,
    },
}

/// A model read from a surprise `.npz`, with what the user should know about it.
#[derive(Debug)]
pub struct Import {
    /// The model, ready to save.
    pub model: Model,
    /// Differences from surprise worth telling the user (may be empty).
    pub warnings: Vec<String>,
}

/// Reads an exported surprise `SVD` into a model. `titles` (from an item
/// file) take precedence over titles stored in the archive; `path` is also
/// recorded in the model's metadata as given.
pub fn import(path: &Path, titles: Option<&ItemTitles>) -> Result<Import, SurpriseError> {
    let file = File::open(path).map_err(|source| SurpriseError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    import_from(BufReader::new(file), path, titles)
}

/// As [`import`], from an archive already open; `path` names it in errors
/// and in the model's metadata.
fn import_from<R: std::io::Read + Seek>(
    reader: R,
    path: &Path,
    titles: Option<&ItemTitles>,
) -> Result<Import, SurpriseError> {
    let npz = NpzReader::new(reader).map_err(|source| SurpriseError::Npz {
        path: path.to_path_buf(),
        source,
    })?;
    let mut arrays = Arrays { npz, path };
    arrays.model(titles)
}

/// The archive being imported, with typed, shape-checked access to its arrays.
struct Arrays<'a, R: std::io::Read + Seek> {
    npz: NpzReader<R>,
    path: &'a Path,
}

impl<R: std::io::Read + Seek> Arrays<'_, R> {
    fn invalid(&self, reason: String) -> SurpriseError {
        SurpriseError::Invalid {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    fn optional(&mut self, name: &str) -> Result<Option<NpyArray>, SurpriseError> {
        self.npz.get(name).map_err(|source| SurpriseError::Npz {
            path: self.path.to_path_buf(),
            source,
        })
    }

    fn required(&mut self, name: &str) -> Result<NpyArray, SurpriseError> {
        self.optional(name)?.ok_or_else(|| {
            self.invalid(format!(
                "no array {name:?}: not a model exported by recstream_surprise.export"
            ))
        })
    }

    fn check_shape(
        &self,
        name: &str,
        array: &NpyArray,
        shape: &[usize],
    ) -> Result<(), SurpriseError> {
        if array.shape == shape {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "array {name:?} has shape {:?}, expected {shape:?}",
                array.shape
            )))
        }
    }

    /// Float elements as `f32`, each finite.
    fn f32s(&self, name: &str, array: NpyArray) -> Result<Vec<f32>, SurpriseError> {
        let NpyData::Float(values) = array.data else {
            return Err(self.invalid(format!("array {name:?} is not floating point")));
        };
        values
            .into_iter()
            .map(|x| {
                let y = x as f32;
                if y.is_finite() {
                    Ok(y)
                } else {
                    Err(self.invalid(format!(
                        "array {name:?} holds {x}, which is not a finite 32-bit float"
                    )))
                }
            })
            .collect()
    }

    fn ints(&self, name: &str, array: NpyArray) -> Result<Vec<i64>, SurpriseError> {
        match array.data {
            NpyData::Int(values) => Ok(values),
            _ => Err(self.invalid(format!("array {name:?} is not an integer array"))),
        }
    }

    fn strings(&self, name: &str, array: NpyArray) -> Result<Vec<String>, SurpriseError> {
        match array.data {
            NpyData::Str(values) => Ok(values),
            _ => Err(self.invalid(format!("array {name:?} is not a string array"))),
        }
    }

    /// A required array of floats of this shape.
    fn floats_of(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, SurpriseError> {
        let array = self.required(name)?;
        self.check_shape(name, &array, shape)?;
        self.f32s(name, array)
    }

    /// An optional integer array of this shape, each value in `T`.
    fn ints_of<T: TryFrom<i64>>(
        &mut self,
        name: &str,
        shape: Option<&[usize]>,
    ) -> Result<Option<Vec<T>>, SurpriseError> {
        let Some(array) = self.optional(name)? else {
            return Ok(None);
        };
        if let Some(shape) = shape {
            self.check_shape(name, &array, shape)?;
        } else if array.shape.len() != 1 {
            return Err(self.invalid(format!("array {name:?} is not one-dimensional")));
        }
        let values = self.ints(name, array)?;
        values
            .into_iter()
            .map(|v| {
                T::try_from(v)
                    .map_err(|_| self.invalid(format!("array {name:?} holds {v}, out of range")))
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    /// An optional string array of this shape.
    fn strings_of(
        &mut self,
        name: &str,
        shape: &[usize],
    ) -> Result<Option<Vec<String>>, SurpriseError> {
        let Some(array) = self.optional(name)? else {
            return Ok(None);
        };
        self.check_shape(name, &array, shape)?;
        self.strings(name, array).map(Some)
    }

    fn scalar_f32(&mut self, name: &str) -> Result<Option<f32>, SurpriseError> {
        let Some(array) = self.optional(name)? else {
            return Ok(None);
        };
        self.check_shape(name, &array, &[])?;
        Ok(self.f32s(name, array)?.first().copied())
    }

    fn scalar_int(&mut self, name: &str) -> Result<Option<i64>, SurpriseError> {
        Ok(self
            .ints_of::<i64>(name, Some(&[]))?
            .and_then(|v| v.first().copied()))
    }

    fn scalar_str(&mut self, name: &str) -> Result<Option<String>, SurpriseError> {
        Ok(self
            .strings_of(name, &[])?
            .and_then(|v| v.into_iter().next()))
    }

    fn scalar_bool(&mut self, name: &str) -> Result<Option<bool>, SurpriseError> {
        let Some(array) = self.optional(name)? else {
            return Ok(None);
        };
        self.check_shape(name, &array, &[])?;
        match array.data {
            NpyData::Bool(v) => Ok(v.first().copied()),
            NpyData::Int(v) => Ok(v.first().map(|&x| x != 0)),
            _ => Err(self.invalid(format!("array {name:?} is not a boolean"))),
        }
    }

    fn ids(&mut self, name: &str, n: usize) -> Result<IdMap, SurpriseError> {
        let array = self.required(name)?;
        self.check_shape(name, &array, &[n])?;
        let ids = self.strings(name, array)?;
        IdMap::from_ordered(ids.into_iter().map(RawId::new).collect())
            .map_err(|dup| self.invalid(format!("array {name:?} holds the id {dup} twice")))
    }

    fn model(&mut self, titles: Option<&ItemTitles>) -> Result<Import, SurpriseError> {
        if let Some(version) = self.scalar_int("format_version")?
            && version != FORMAT_VERSION
        {
            return Err(self.invalid(format!(
                "format_version {version}, but this build reads version {FORMAT_VERSION}"
            )));
        }
        let pu = self.required("pu")?;
        let (n_users, k) = match pu.shape[..] {
            [rows, k] if k > 0 => (rows, k),
            _ => {
                return Err(self.invalid(format!(
                    "array \"pu\" has shape {:?}, expected (n_users, n_factors) with n_factors >= 1",
                    pu.shape
                )));
            }
        };
        let user_factors = self.f32s("pu", pu)?;
        let qi = self.required("qi")?;
        let n_items = match qi.shape[..] {
            [rows, cols] if cols == k => rows,
            _ => {
                return Err(self.invalid(format!(
                    "array \"qi\" has shape {:?}, expected (n_items, {k})",
                    qi.shape
                )));
            }
        };
        let item_factors = self.f32s("qi", qi)?;
        let mut user_bias = self.floats_of("bu", &[n_users])?;
        let mut item_bias = self.floats_of("bi", &[n_items])?;
        let mean = self.floats_of("global_mean", &[])?;
        let scale = self.floats_of("rating_scale", &[2])?;
        let scale = RatingScale {
            min: scale[0],
            max: scale[1],
        };
        scale.check().map_err(|e| self.invalid(e))?;
        let users = self.ids("user_ids", n_users)?;
        let items = self.ids("item_ids", n_items)?;
        let user_counts = self
            .ints_of::<u32>("user_n_ratings", Some(&[n_users]))?
            .unwrap_or_else(|| vec![1; n_users]);
        let item_counts = self
            .ints_of::<u32>("item_n_ratings", Some(&[n_items]))?
            .unwrap_or_else(|| vec![1; n_items]);
        let seen = match (
            self.ints_of::<u64>("seen_offsets", Some(&[n_users + 1]))?,
            self.ints_of::<u32>("seen_items", None)?,
        ) {
            (Some(offsets), Some(seen)) => SeenItems::from_parts(offsets, seen, n_items)
                .map_err(|e| self.invalid(format!("seen_offsets/seen_items: {e}")))?,
            (None, None) => SeenItems::from_parts(vec![0; n_users + 1], Vec::new(), n_items)
                .map_err(|e| self.invalid(e))?,
            _ => return Err(self.invalid("seen_offsets and seen_items come together".into())),
        };
        let mut stored_titles = self
            .strings_of("titles", &[n_items])?
            .unwrap_or_else(|| vec![String::new(); n_items]);
        if let Some(titles) = titles {
            for (title, id) in stored_titles.iter_mut().zip(items.ids()) {
                if let Some(t) = titles.get(id.as_str()) {
                    title.clone_from(t);
                }
            }
        }
        let params = self.params(k)?;
        let mut warnings = Vec::new();
        // surprise's unbiased estimate is the bare dot product: no mean and
        // no biases, whatever the arrays hold.
        let global_mean = if params.biased {
            mean[0]
        } else {
            user_bias.iter_mut().for_each(|b| *b = 0.0);
            item_bias.iter_mut().for_each(|b| *b = 0.0);
            if mean[0] != 0.0 {
                warnings.push(format!(
                    "biased=False: a pair with an unknown user or item scores {} here (the scale minimum), {} in surprise (its global mean)",
                    scale.min, mean[0]
                ));
            }
            0.0
        };
        let n_ratings = match self.scalar_int("n_ratings")? {
            Some(n) => u64::try_from(n).map_err(|_| self.invalid(format!("n_ratings {n}")))?,
            None => user_counts.iter().map(|&c| u64::from(c)).sum(),
        };
        let library = self
            .scalar_str("library")?
            .unwrap_or_else(|| "scikit-surprise".into());
        let algorithm = self
            .scalar_str("algorithm")?
            .unwrap_or_else(|| "SVD".into());
        let random_state = self.scalar_int("random_state")?;
        let model = Model {
            meta: ModelMeta {
                created_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
                params,
                threads: 1,
                train_rmse: None,
                n_ratings,
                source: format!("{} (imported from {library})", self.path.display()),
                fit_seconds: 0.0,
                online: None,
                imported: Some(ImportedFrom {
                    library,
                    algorithm,
                    file: self.path.display().to_string(),
                    random_state,
                }),
            },
            id: String::from("unsaved"),
            users,
            items,
            titles: stored_titles,
            svd: SvdModel {
                n_factors: k,
                global_mean,
                scale,
                user_bias,
                item_bias,
                user_factors,
                item_factors,
                user_counts,
                item_counts,
            },
            seen,
        };
        model.check_consistency().map_err(|e| self.invalid(e))?;
        Ok(Import { model, warnings })
    }

    /// The hyper-parameters stored in the archive, surprise's defaults for
    /// the ones it does not hold.
    fn params(&mut self, n_factors: usize) -> Result<Hyperparams, SurpriseError> {
        let random_state = self.scalar_int("random_state")?;
        let mut p = Hyperparams::with_seed(
            random_state
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        );
        p.n_factors = n_factors;
        if let Some(n) = self.scalar_int("n_epochs")? {
            p.n_epochs = usize::try_from(n).map_err(|_| self.invalid(format!("n_epochs {n}")))?;
        }
        if let Some(b) = self.scalar_bool("biased")? {
            p.biased = b;
        }
        let floats: [(&str, &mut f32); 10] = [
            ("init_mean", &mut p.init_mean),
            ("init_std_dev", &mut p.init_std_dev),
            ("lr_bu", &mut p.lr_bu),
            ("lr_bi", &mut p.lr_bi),
            ("lr_pu", &mut p.lr_pu),
            ("lr_qi", &mut p.lr_qi),
            ("reg_bu", &mut p.reg_bu),
            ("reg_bi", &mut p.reg_bi),
            ("reg_pu", &mut p.reg_pu),
            ("reg_qi", &mut p.reg_qi),
        ];
        for (name, slot) in floats {
            if let Some(v) = self.scalar_f32(name)? {
                *slot = v;
            }
        }
        Ok(p)
    }
}

/// Writes `model` in the exchange format to `path` (through a temporary
/// file renamed into place). Factors and biases are written as `<f4`, the
/// values recstream scores with, so importing the file back gives the same
/// scores.
pub fn export(model: &Model, path: &Path) -> Result<(), SurpriseError> {
    let io_err = |source| SurpriseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let npz_err = |source| SurpriseError::Npz {
        path: path.to_path_buf(),
        source,
    };
    model
        .check_consistency()
        .map_err(|reason| SurpriseError::Invalid {
            path: path.to_path_buf(),
            reason,
        })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".recstream-npz-")
        .tempfile_in(dir)
        .map_err(io_err)?;
    {
        let mut npz = NpzWriter::new(BufWriter::new(tmp.as_file_mut()));
        write_arrays(model, &mut npz).map_err(npz_err)?;
        let mut out = npz.finish().map_err(npz_err)?;
        out.flush().map_err(io_err)?;
    }
    // Temporary files are private (0600); an exported model is not.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io_err)?;
    }
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    Ok(())
}

fn write_arrays<W: Write + Seek>(model: &Model, npz: &mut NpzWriter<W>) -> Result<(), NpzError> {
    let svd = &model.svd;
    let (n_users, n_items, k) = (svd.n_users(), svd.n_items(), svd.n_factors);
    let as_i64 = |v: &[u32]| v.iter().map(|&x| i64::from(x)).collect::<Vec<_>>();
    fn strs(ids: &[RawId]) -> Vec<&str> {
        ids.iter().map(RawId::as_str).collect()
    }
    npz.add("format_version", NpyOut::I64(&[FORMAT_VERSION]), &[])?;
    npz.add("pu", NpyOut::F32(&svd.user_factors), &[n_users, k])?;
    npz.add("qi", NpyOut::F32(&svd.item_factors), &[n_items, k])?;
    npz.add("bu", NpyOut::F32(&svd.user_bias), &[n_users])?;
    npz.add("bi", NpyOut::F32(&svd.item_bias), &[n_items])?;
    npz.add(
        "global_mean",
        NpyOut::F64(&[f64::from(svd.global_mean)]),
        &[],
    )?;
    let scale = [f64::from(svd.scale.min), f64::from(svd.scale.max)];
    npz.add("rating_scale", NpyOut::F64(&scale), &[2])?;
    npz.add(
        "user_ids",
        NpyOut::Str(&strs(model.users.ids())),
        &[n_users],
    )?;
    npz.add(
        "item_ids",
        NpyOut::Str(&strs(model.items.ids())),
        &[n_items],
    )?;
    npz.add(
        "user_n_ratings",
        NpyOut::I64(&as_i64(&svd.user_counts)),
        &[n_users],
    )?;
    npz.add(
        "item_n_ratings",
        NpyOut::I64(&as_i64(&svd.item_counts)),
        &[n_items],
    )?;
    let (offsets, seen) = model.seen.to_parts(n_users);
    let offsets: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
    npz.add("seen_offsets", NpyOut::I64(&offsets), &[n_users + 1])?;
    npz.add("seen_items", NpyOut::I64(&as_i64(&seen)), &[seen.len()])?;
    let titles: Vec<&str> = model.titles.iter().map(String::as_str).collect();
    npz.add("titles", NpyOut::Str(&titles), &[n_items])?;
    let p = &model.meta.params;
    npz.add("n_factors", NpyOut::I64(&[k as i64]), &[])?;
    npz.add("n_epochs", NpyOut::I64(&[p.n_epochs as i64]), &[])?;
    npz.add("biased", NpyOut::Bool(&[p.biased]), &[])?;
    let floats = [
        ("init_mean", p.init_mean),
        ("init_std_dev", p.init_std_dev),
        ("lr_bu", p.lr_bu),
        ("lr_bi", p.lr_bi),
        ("lr_pu", p.lr_pu),
        ("lr_qi", p.lr_qi),
        ("reg_bu", p.reg_bu),
        ("reg_bi", p.reg_bi),
        ("reg_pu", p.reg_pu),
        ("reg_qi", p.reg_qi),
    ];
    for (name, value) in floats {
        npz.add(name, NpyOut::F64(&[f64::from(value)]), &[])?;
    }
    let random_state = match &model.meta.imported {
        Some(from) => from.random_state,
        None => i64::try_from(p.seed).ok(),
    };
    if let Some(seed) = random_state {
        npz.add("random_state", NpyOut::I64(&[seed]), &[])?;
    }
    npz.add(
        "n_ratings",
        NpyOut::I64(&[model.meta.n_ratings as i64]),
        &[],
    )?;
    let (library, algorithm) = match &model.meta.imported {
        Some(from) => (from.library.clone(), from.algorithm.clone()),
        None => (
            format!(
                "recstream {} (model {})",
                env!("CARGO_PKG_VERSION"),
                model.id
            ),
            "SVD".to_string(),
        ),
    };
    npz.add("library", NpyOut::Str(&[&library]), &[])?;
    npz.add("algorithm", NpyOut::Str(&[&algorithm]), &[])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FitConfig;
    use crate::synth::{SyntheticSpec, generate};

    fn trained() -> Model {
        let data = generate(&SyntheticSpec {
            users: 40,
            items: 50,
            ratings: 800,
            seed: 4,
        });
        let config = FitConfig {
            params: Hyperparams {
                n_factors: 6,
                n_epochs: 3,
                ..Hyperparams::with_seed(5)
            },
            threads: 1,
            scale: None,
            titles: None,
            source: "synthetic".into(),
        };
        let mut model = Model::fit(&data, &config, &mut |_| {}).unwrap();
        // A user added online, with no training ratings: unknown to the estimate.
        model.svd.push_user(0.3, &[0.1; 6]);
        model.users.intern("new-user");
        model.seen.ensure_users(model.svd.n_users());
        model
    }

    fn scores(model: &Model) -> Vec<u32> {
        let mut out = Vec::new();
        for u in 0..model.svd.n_users() as u32 {
            for i in 0..model.svd.n_items() as u32 {
                out.push(model.svd.predict(Some(u), Some(i)).to_bits());
            }
        }
        out
    }

    #[test]
    fn export_then_import_gives_identical_scores_ids_and_seen_items() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npz");
        let model = trained();
        export(&model, &path).unwrap();
        let back = import(&path, None).unwrap();
        assert!(back.warnings.is_empty(), "{:?}", back.warnings);
        let back = back.model;
        assert_eq!(scores(&back), scores(&model));
        assert!(back.svd == model.svd, "parameters differ");
        assert_eq!(back.users, model.users);
        assert_eq!(back.items, model.items);
        let n = model.svd.n_users();
        assert_eq!(back.seen.to_parts(n), model.seen.to_parts(n));
        assert_eq!(back.meta.params, model.meta.params);
        let from = back.meta.imported.unwrap();
        assert!(from.library.starts_with("recstream "), "{}", from.library);
        assert_eq!(from.random_state, Some(5));
    }

    /// An archive holding only the required arrays, as a hand-made export would.
    fn minimal(
        edit: impl FnOnce(&mut Vec<(&'static str, Vec<u8>)>),
    ) -> (tempfile::TempDir, PathBuf) {
        let mut arrays: Vec<(&str, Vec<u8>)> = vec![
            (
                "pu",
                crate::npy::encode(NpyOut::F64(&[0.1, 0.2, 0.3, 0.4]), &[2, 2]),
            ),
            (
                "qi",
                crate::npy::encode(NpyOut::F64(&[1.0, 1.0, 2.0, 0.0, 0.5, 0.5]), &[3, 2]),
            ),
            ("bu", crate::npy::encode(NpyOut::F64(&[0.5, -0.5]), &[2])),
            (
                "bi",
                crate::npy::encode(NpyOut::F64(&[0.1, 0.2, 0.3]), &[3]),
            ),
            ("global_mean", crate::npy::encode(NpyOut::F64(&[3.5]), &[])),
            (
                "rating_scale",
                crate::npy::encode(NpyOut::F64(&[1.0, 5.0]), &[2]),
            ),
            (
                "user_ids",
                crate::npy::encode(NpyOut::Str(&["196", "186"]), &[2]),
            ),
            (
                "item_ids",
                crate::npy::encode(NpyOut::Str(&["242", "302", "377"]), &[3]),
            ),
        ];
        edit(&mut arrays);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.npz");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, bytes) in arrays {
            zip.start_file(
                format!("{name}.npy"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(&bytes).unwrap();
        }
        zip.finish().unwrap();
        (dir, path)
    }

    #[test]
    fn a_minimal_archive_scores_like_surprise_estimate() {
        let (_dir, path) = minimal(|_| {});
        let import = import(&path, None).unwrap();
        let m = &import.model;
        let (u, i) = (m.users.get("196"), m.items.get("302"));
        // 3.5 + 0.5 + 0.2 + (0.1 * 2.0 + 0.2 * 0.0)
        assert!((m.svd.predict(u, i) - 4.4).abs() < 1e-6);
        // Unknown item: mean plus the user's bias.
        assert!((m.svd.predict(u, None) - 4.0).abs() < 1e-6);
        assert_eq!(m.svd.predict(None, None), 3.5);
        assert_eq!(m.meta.params.n_factors, 2);
        assert_eq!(m.meta.params.n_epochs, 20);
        assert_eq!(m.meta.imported.as_ref().unwrap().library, "scikit-surprise");
    }

    #[test]
    fn an_unbiased_model_drops_biases_and_warns_about_unknowns() {
        let (_dir, path) =
            minimal(|a| a.push(("biased", crate::npy::encode(NpyOut::Bool(&[false]), &[]))));
        let import = import(&path, None).unwrap();
        let m = &import.model;
        let (u, i) = (m.users.get("196"), m.items.get("302"));
        // The bare dot product, clipped to the scale.
        assert_eq!(m.svd.predict(u, i), 1.0);
        assert_eq!(m.svd.raw_estimate(u, i), 0.1 * 2.0);
        assert_eq!(import.warnings.len(), 1, "{:?}", import.warnings);
    }

    /// Named arrays, as a test archive holds them.
    type TestArrays = Vec<(&'static str, Vec<u8>)>;
    /// A change to a test archive.
    type Edit = Box<dyn FnOnce(&mut TestArrays)>;

    fn import_error(edit: impl FnOnce(&mut TestArrays)) -> String {
        let (_dir, path) = minimal(edit);
        match import(&path, None) {
            Ok(_) => panic!("imported"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn missing_mismatched_or_mistyped_arrays_are_clear_errors() {
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|a| a.retain(|(n, _)| *n != "qi")),
                "no array \"qi\"",
            ),
            (
                Box::new(|a| a[2].1 = crate::npy::encode(NpyOut::F64(&[0.5]), &[1])),
                "array \"bu\" has shape [1], expected [2]",
            ),
            (
                Box::new(|a| a[1].1 = crate::npy::encode(NpyOut::F64(&[1.0; 9]), &[3, 3])),
                "array \"qi\" has shape [3, 3], expected (n_items, 2)",
            ),
            (
                Box::new(|a| a[6].1 = crate::npy::encode(NpyOut::I64(&[196, 186]), &[2])),
                "array \"user_ids\" is not a string array",
            ),
            (
                Box::new(|a| a[7].1 = crate::npy::encode(NpyOut::Str(&["1", "2", "1"]), &[3])),
                "holds the id 1 twice",
            ),
            (
                Box::new(|a| a[4].1 = crate::npy::encode(NpyOut::F64(&[1e300]), &[])),
                "not a finite 32-bit float",
            ),
            (
                Box::new(|a| a[5].1 = crate::npy::encode(NpyOut::F64(&[5.0, 1.0]), &[2])),
                "unusable rating scale",
            ),
            (
                Box::new(|a| {
                    a.push(("format_version", crate::npy::encode(NpyOut::I64(&[2]), &[])))
                }),
                "format_version 2",
            ),
            (
                Box::new(|a| a.push(("seen_items", crate::npy::encode(NpyOut::I64(&[0]), &[1])))),
                "come together",
            ),
            (
                Box::new(|a| {
                    a.push((
                        "user_n_ratings",
                        crate::npy::encode(NpyOut::I64(&[-1, 2]), &[2]),
                    ))
                }),
                "holds -1, out of range",
            ),
        ];
        for (edit, expected) in cases {
            let message = import_error(edit);
            assert!(message.contains(expected), "{message} lacks {expected}");
        }
    }

    #[test]
    fn titles_from_an_item_file_override_stored_ones() {
        let titles: ItemTitles =
            [("302".to_string(), "L.A. Confidential (1997)".to_string())].into();
        let (_dir, path) = minimal(|a| {
            a.push((
                "titles",
                crate::npy::encode(NpyOut::Str(&["A", "B", "C"]), &[3]),
            ))
        });
        let m = import(&path, Some(&titles)).unwrap().model;
        assert_eq!(m.titles, ["A", "L.A. Confidential (1997)", "C"]);
    }

    /// The minimal archive's arrays and the optional ones a hostile archive
    /// might add: each slot the fuzz property below may fill.
    const SLOTS: [&str; 16] = [
        "pu",
        "qi",
        "bu",
        "bi",
        "global_mean",
        "rating_scale",
        "user_ids",
        "item_ids",
        "titles",
        "user_n_ratings",
        "seen_offsets",
        "seen_items",
        "biased",
        "n_epochs",
        "format_version",
        "lr_pu",
    ];

    /// A minimal archive with `name` holding `array`, as bytes.
    fn archive_with(name: &'static str, array: Vec<u8>) -> Vec<u8> {
        let (_dir, path) = minimal(|a| {
            a.retain(|(n, _)| *n != name);
            a.push((name, array));
        });
        std::fs::read(path).unwrap()
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(crate::testing::fuzz_cases()))]

        /// Any array of any type and shape in any slot is imported or
        /// refused with an error, never a panic, and an imported model's
        /// parameters are finite.
        #[test]
        fn any_array_in_any_slot_imports_or_is_refused(
            slot in 0..SLOTS.len(),
            kind in 0u8..5,
            shape in proptest::collection::vec(0usize..4, 0..3),
            floats in proptest::collection::vec(proptest::num::f64::ANY, 1..10),
            ints in proptest::collection::vec(proptest::prelude::any::<i64>(), 1..10),
            strs in proptest::collection::vec("[^\\x00]{0,6}", 1..10),
        ) {
            let n: usize = shape.iter().product();
            let floats: Vec<f64> = floats.iter().copied().cycle().take(n).collect();
            let ints: Vec<i64> = ints.iter().copied().cycle().take(n).collect();
            let strs: Vec<&str> = strs.iter().map(String::as_str).cycle().take(n).collect();
            let bools: Vec<bool> = ints.iter().map(|i| i % 2 == 0).collect();
            let array = match kind {
                0 => crate::npy::encode(NpyOut::F64(&floats), &shape),
                1 => crate::npy::encode(NpyOut::I64(&ints), &shape),
                2 => crate::npy::encode(NpyOut::Str(&strs), &shape),
                3 => crate::npy::encode(NpyOut::Bool(&bools), &shape),
                _ => crate::npy::encode(NpyOut::I32(&ints.iter().map(|&i| i as i32).collect::<Vec<_>>()), &shape),
            };
            let bytes = archive_with(SLOTS[slot], array);
            if let Ok(import) = import_from(std::io::Cursor::new(bytes), Path::new("fuzz.npz"), None) {
                proptest::prop_assert_eq!(import.model.svd.non_finite_parameters(), None);
            }
        }
    }
}
