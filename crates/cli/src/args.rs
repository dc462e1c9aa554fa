//! Argument groups shared by several commands: ratings input and SVD hyper-parameters.
//!
//! Training, evaluation and the benchmarks all read a ratings file and all
//! take the same hyper-parameters, named after scikit-surprise's `SVD`
//! arguments so a tuned surprise configuration carries over flag for flag.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use recstream_core::data::{RatingsFormat, ReadOptions, read_ratings};
use recstream_core::{Dataset, Hyperparams, RatingScale};

/// Where ratings come from and how to read them.
#[derive(Debug, Clone, Args)]
pub struct RatingsFormatArgs {
    /// Layout of the ratings file: auto, ml100k (u.data), ml1m (ratings.dat), csv (ratings.csv) or recbole (.inter).
    #[arg(long, default_value = "auto", value_parser = parse_format)]
    pub format: RatingsFormat,

    /// Skip malformed lines (counting and reporting them) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

fn parse_format(s: &str) -> Result<RatingsFormat, String> {
    s.parse()
}

impl RatingsFormatArgs {
    /// Reads a ratings file, reporting skipped lines on stderr.
    pub fn read(&self, path: &Path, quiet: bool) -> anyhow::Result<Dataset> {
        let started = Instant::now();
        let options = ReadOptions {
            format: self.format,
            skip_bad_lines: self.skip_bad_lines,
        };
        // Large files (MovieLens 25M) take a while to parse: say so on a terminal.
        let progress =
            crate::progress::Progress::spinner(&format!("reading {}", path.display()), quiet);
        let (data, report) = read_ratings(path, options)
            .with_context(|| format!("reading ratings from {}", path.display()))?;
        progress.finish();
        if report.skipped > 0 {
            eprintln!(
                "skipped {} malformed line(s) in {}:",
                report.skipped,
                path.display()
            );
            for example in &report.skipped_examples {
                eprintln!("  {example}");
            }
        }
        if !quiet {
            eprintln!(
                "read {} ratings ({} users, {} items, {} format) from {} in {:.3} s",
                data.len(),
                data.users.len(),
                data.items.len(),
                report.format,
                path.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(data)
    }
}

/// Hyper-parameters of the SVD model (scikit-surprise's names and defaults).
#[derive(Debug, Clone, Args)]
pub struct HyperparamArgs {
    /// Number of latent factors.
    #[arg(long, visible_alias = "factors", default_value_t = 100)]
    pub n_factors: usize,

    /// Number of SGD passes over the ratings.
    #[arg(long, visible_alias = "epochs", default_value_t = 20)]
    pub n_epochs: usize,

    /// Learning rate of every parameter (overridden per parameter by --lr-bu etc.).
    #[arg(long, default_value_t = 0.005)]
    pub lr_all: f32,

    /// Regularisation of every parameter (overridden per parameter by --reg-bu etc.).
    #[arg(long, default_value_t = 0.02)]
    pub reg_all: f32,

    /// Learning rate of the user biases.
    #[arg(long)]
    pub lr_bu: Option<f32>,
    /// Learning rate of the item biases.
    #[arg(long)]
    pub lr_bi: Option<f32>,
    /// Learning rate of the user factors.
    #[arg(long)]
    pub lr_pu: Option<f32>,
    /// Learning rate of the item factors.
    #[arg(long)]
    pub lr_qi: Option<f32>,
    /// Regularisation of the user biases.
    #[arg(long)]
    pub reg_bu: Option<f32>,
    /// Regularisation of the item biases.
    #[arg(long)]
    pub reg_bi: Option<f32>,
    /// Regularisation of the user factors.
    #[arg(long)]
    pub reg_pu: Option<f32>,
    /// Regularisation of the item factors.
    #[arg(long)]
    pub reg_qi: Option<f32>,

    /// Mean of the normal distribution the factors start from.
    #[arg(long, default_value_t = 0.0, allow_hyphen_values = true)]
    pub init_mean: f32,

    /// Standard deviation of that distribution.
    #[arg(long, default_value_t = 0.1)]
    pub init_std_dev: f32,

    /// Learn no biases: the estimate is the bare dot product (surprise's biased=False).
    #[arg(long)]
    pub unbiased: bool,

    /// Seed of initialisation and shuffling (random when omitted; printed so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Draw a new random visiting order every epoch (default: one order, drawn once; same accuracy, faster).
    #[arg(long)]
    pub reshuffle: bool,

    /// Training threads: 1 is sequential SGD exactly as surprise; more uses blocked parallel SGD.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,

    /// Rating scale "MIN,MAX" estimates are clipped to (default: the range seen in the data).
    #[arg(long, value_parser = parse_scale)]
    pub rating_scale: Option<RatingScale>,
}

impl HyperparamArgs {
    /// The hyper-parameters, with a fresh random seed when none was given.
    pub fn params(&self) -> Hyperparams {
        let seed = self.seed.unwrap_or_else(rand::random);
        let base = Hyperparams::with_rates(seed, self.lr_all, self.reg_all);
        Hyperparams {
            n_factors: self.n_factors,
            n_epochs: self.n_epochs,
            biased: !self.unbiased,
            init_mean: self.init_mean,
            init_std_dev: self.init_std_dev,
            lr_bu: self.lr_bu.unwrap_or(base.lr_bu),
            lr_bi: self.lr_bi.unwrap_or(base.lr_bi),
            lr_pu: self.lr_pu.unwrap_or(base.lr_pu),
            lr_qi: self.lr_qi.unwrap_or(base.lr_qi),
            reg_bu: self.reg_bu.unwrap_or(base.reg_bu),
            reg_bi: self.reg_bi.unwrap_or(base.reg_bi),
            reg_pu: self.reg_pu.unwrap_or(base.reg_pu),
            reg_qi: self.reg_qi.unwrap_or(base.reg_qi),
            seed,
            reshuffle: self.reshuffle,
        }
    }

    /// The rating scale to use for `data`.
    pub fn scale(&self, data: &Dataset) -> RatingScale {
        self.rating_scale
            .or_else(|| data.observed_scale())
            .unwrap_or(RatingScale::FIVE_STARS)
    }
}

fn parse_scale(s: &str) -> Result<RatingScale, String> {
    let (min, max) = s.split_once(',').ok_or("expected MIN,MAX, e.g. 1,5")?;
    let parse = |v: &str| {
        v.trim()
            .parse::<f32>()
            .map_err(|_| format!("{v:?} is not a number"))
    };
    let (min, max) = (parse(min)?, parse(max)?);
    if !(min.is_finite() && max.is_finite() && min < max) {
        return Err("MIN must be below MAX".into());
    }
    Ok(RatingScale { min, max })
}

/// Where the Kafka cluster is and how to talk to it.
#[derive(Debug, Clone, Args)]
pub struct KafkaArgs {
    /// Bootstrap brokers, HOST:PORT[,HOST:PORT...].
    #[arg(long, env = "RECSTREAM_BROKERS")]
    pub brokers: String,

    #[command(flatten)]
    pub properties: KafkaProperties,
}

/// librdkafka properties passed through unchanged.
#[derive(Debug, Clone, Args)]
pub struct KafkaProperties {
    /// Any librdkafka property, repeatable: --kafka security.protocol=ssl --kafka sasl.username=me ...
    #[arg(long = "kafka", value_name = "KEY=VALUE", value_parser = recstream_stream::kafka::parse_property)]
    pub kafka: Vec<(String, String)>,
}

impl KafkaArgs {
    /// The settings every client of this command uses.
    pub fn settings(&self) -> recstream_stream::kafka::KafkaSettings {
        self.properties.settings(&self.brokers)
    }
}

impl KafkaProperties {
    /// Settings for `brokers` with these properties.
    pub fn settings(&self, brokers: &str) -> recstream_stream::kafka::KafkaSettings {
        recstream_stream::kafka::KafkaSettings {
            brokers: brokers.to_string(),
            overrides: self.kafka.clone(),
        }
    }
}

/// Parses a number that must be finite and above zero (a rate, a number of
/// seconds): zero, negative, NaN and infinite values are refused here, so the
/// libraries never see one (`Duration::from_secs_f64(-1.0)` panics).
pub fn positive(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("must be a number above zero, got {text}"))
    }
}

/// Parses a number of seconds above zero, at most a year.
pub fn seconds(text: &str) -> Result<std::time::Duration, String> {
    let value = positive(text)?;
    if value > 365.0 * 86_400.0 {
        return Err(format!("{text} seconds is more than a year"));
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

/// A tokio runtime for the streaming commands.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A range of user ids, `FIRST..LAST` (`FIRST..=LAST` too), for `--uids`.
pub fn uid_range(text: &str) -> Result<(u64, u64), String> {
    let (a, b) = text
        .split_once("..")
        .ok_or("expected FIRST..LAST, e.g. 1..943")?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("{v:?} is not a user id"))
    };
    let (a, b) = (parse(a)?, parse(b.trim_start_matches('='))?);
    if a > b {
        return Err("FIRST must not exceed LAST".into());
    }
    Ok((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_negative_and_non_finite_numbers_are_refused() {
        for bad in ["0", "-1", "NaN", "inf", "-inf", "", "x", "1e400"] {
            assert!(positive(bad).is_err(), "{bad}");
            assert!(seconds(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("0.5"), Ok(0.5));
        assert_eq!(seconds("2"), Ok(std::time::Duration::from_secs(2)));
        assert!(seconds("1e12").is_err());
    }
}
