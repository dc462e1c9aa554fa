//! End-to-end tests of the `recstream` binary on synthetic data: no network.
//!
//! Each test drives the real binary the way a user would (train, recommend,
//! eval, model info) and checks the exact outcome, including the error
//! messages users see for bad input.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

fn recstream() -> Command {
    Command::cargo_bin("recstream").expect("the recstream binary is built")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is one JSON object")
}

/// Writes a synthetic ratings file and an item file, returns their paths.
fn synthetic_files(dir: &Path) -> (PathBuf, PathBuf) {
    let ratings = dir.join("ratings.tsv");
    recstream()
        .args([
            "data",
            "synth",
            "--users",
            "300",
            "--items",
            "200",
            "--ratings",
            "15000",
            "--seed",
            "5",
            "--out",
        ])
        .arg(&ratings)
        .assert()
        .success();
    let items = dir.join("items.item");
    let titles: String = (1..=200)
        .map(|i| format!("{i}|Movie {i} (19{:02})|01-Jan-1990||http://x\n", i % 100))
        .collect();
    std::fs::write(&items, titles).expect("write items");
    (ratings, items)
}

fn train(dir: &Path, ratings: &Path, items: &Path) -> PathBuf {
    let model = dir.join("model.rsm");
    recstream()
        .args([
            "train",
            "--quiet",
            "--seed",
            "3",
            "--n-factors",
            "20",
            "--n-epochs",
            "10",
            "--ratings",
        ])
        .arg(ratings)
        .arg("--items")
        .arg(items)
        .arg("--out")
        .arg(&model)
        .assert()
        .success();
    model
}

#[test]
fn train_then_recommend_gives_unrated_titled_items_in_score_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, items) = synthetic_files(dir.path());
    let model = train(dir.path(), &ratings, &items);

    let output = recstream()
        .args(["recommend", "--user", "7", "-n", "5", "--json", "--model"])
        .arg(&model)
        .output()
        .expect("run");
    let reply = stdout_json(&output);
    assert_eq!(reply["uid"], 7);
    assert_eq!(reply["cold_start"], false);
    let recs = reply["recommendations"].as_array().expect("array");
    assert_eq!(recs.len(), 5);
    let scores: Vec<f64> = recs
        .iter()
        .map(|r| r["score"].as_f64().expect("score"))
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "descending: {scores:?}"
    );
    assert!(scores.iter().all(|s| (1.0..=5.0).contains(s)));
    let rated: Vec<String> = std::fs::read_to_string(&ratings)
        .expect("ratings")
        .lines()
        .filter(|l| l.split('\t').next() == Some("7"))
        .map(|l| l.split('\t').nth(1).unwrap_or_default().to_string())
        .collect();
    for r in recs {
        let iid = r["iid"].as_i64().expect("integer iid").to_string();
        assert!(
            !rated.contains(&iid),
            "item {iid} was already rated by user 7"
        );
        assert_eq!(
            r["title"].as_str().expect("title"),
            format!("Movie {iid} (19{:02})", iid.parse::<u32>().unwrap() % 100)
        );
    }
    assert_eq!(reply["model_version"].as_str().expect("version").len(), 8);
}

#[test]
fn unknown_users_get_a_marked_cold_start_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, items) = synthetic_files(dir.path());
    let model = train(dir.path(), &ratings, &items);
    let output = recstream()
        .args(["recommend", "--user", "no-such-user", "--json", "--model"])
        .arg(&model)
        .output()
        .expect("run");
    let reply = stdout_json(&output);
    assert_eq!(reply["uid"], "no-such-user");
    assert_eq!(reply["cold_start"], true);
    assert_eq!(reply["recommendations"].as_array().map(Vec::len), Some(10));
    let table = recstream()
        .args(["recommend", "--user", "no-such-user", "--model"])
        .arg(&model)
        .output()
        .expect("run");
    assert!(String::from_utf8_lossy(&table.stdout).contains("cold start"));
}

#[test]
fn training_is_reproducible_with_a_seed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, items) = synthetic_files(dir.path());
    let first = std::fs::read(train(dir.path(), &ratings, &items)).expect("model");
    let second = std::fs::read(train(dir.path(), &ratings, &items)).expect("model");
    // Only the creation time in the metadata may differ; compare the factors.
    let info = |bytes: &[u8]| {
        let path = dir.path().join("copy.rsm");
        std::fs::write(&path, bytes).expect("copy");
        let out = recstream()
            .args(["model", "info", "--json"])
            .arg(&path)
            .output()
            .expect("run");
        stdout_json(&out)["meta"]["train_rmse"].clone()
    };
    assert_eq!(info(&first), info(&second));
}

#[test]
fn cross_validation_reports_every_fold_and_the_means() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, _) = synthetic_files(dir.path());
    let output = recstream()
        .args([
            "eval",
            "--folds",
            "3",
            "--seed",
            "1",
            "--n-factors",
            "20",
            "--json",
            "--ratings",
        ])
        .arg(&ratings)
        .output()
        .expect("run");
    let report = stdout_json(&output);
    let folds = report["folds"].as_array().expect("folds");
    assert_eq!(folds.len(), 3);
    for key in [
        "rmse",
        "mae",
        "fit_seconds",
        "test_seconds",
        "precision_at_k",
        "recall_at_k",
        "ndcg_at_k",
    ] {
        let mean = folds
            .iter()
            .map(|f| f[key].as_f64().expect(key))
            .sum::<f64>()
            / 3.0;
        assert!(
            (report[key].as_f64().expect(key) - mean).abs() < 1e-9,
            "{key} is the mean of the folds"
        );
    }
    assert_eq!(report["k"], 10);
    assert!(report["rmse"].as_f64().expect("rmse") < 1.0);
}

#[test]
fn train_test_evaluation_tolerates_unknown_ids() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, _) = synthetic_files(dir.path());
    let test = dir.path().join("test.tsv");
    std::fs::write(&test, "7\t1\t4\t0\nnew-user\t1\t3\t0\n7\tnew-item\t5\t0\n").expect("write");
    let output = recstream()
        .args(["eval", "--n-factors", "10", "--json", "--train"])
        .arg(&ratings)
        .arg("--test")
        .arg(&test)
        .output()
        .expect("run");
    let report = stdout_json(&output);
    assert_eq!(report["n_test"], 3);
    assert!(report["rmse"].as_f64().expect("rmse").is_finite());
}

#[test]
fn a_malformed_ratings_line_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ratings = dir.path().join("bad.data");
    std::fs::write(&ratings, "1\t10\t4\t100\n2\t10\tfive\t101\n").expect("write");
    let output = recstream()
        .args(["train", "--quiet", "--ratings"])
        .arg(&ratings)
        .arg("--out")
        .arg(dir.path().join("m.rsm"))
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.data:2: rating \"five\" is not a number"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("m.rsm").exists(),
        "no model is written from bad data"
    );

    let output = recstream()
        .args([
            "train",
            "--quiet",
            "--skip-bad-lines",
            "--n-factors",
            "4",
            "--ratings",
        ])
        .arg(&ratings)
        .arg("--out")
        .arg(dir.path().join("m.rsm"))
        .output()
        .expect("run");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("skipped 1 malformed line(s)"));
}

#[test]
fn corrupted_truncated_and_foreign_model_files_are_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, items) = synthetic_files(dir.path());
    let model = train(dir.path(), &ratings, &items);
    let bytes = std::fs::read(&model).expect("model");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", bytes[..bytes.len() / 2].to_vec(), "truncated"),
        (
            "corrupted",
            {
                let mut b = bytes.clone();
                b[bytes.len() / 2] ^= 1;
                b
            },
            "corrupted",
        ),
        (
            "foreign",
            b"196\t242\t3\t881250949\n".to_vec(),
            "not a recstream model file",
        ),
        (
            "newer",
            {
                let mut b = bytes.clone();
                b[8] = 9;
                b
            },
            "format version 9",
        ),
    ];
    for (name, content, expected) in cases {
        let path = dir.path().join(format!("{name}.rsm"));
        std::fs::write(&path, content).expect("write");
        let output = recstream()
            .args(["recommend", "--user", "7", "--model"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(!output.status.success(), "{name} must be refused");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
    }
}

#[test]
fn help_lists_the_commands_and_surprise_defaults() {
    let output = recstream().arg("--help").output().expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["data", "train", "recommend", "eval", "model", "bench"] {
        assert!(help.contains(command), "{command} in --help");
    }
    let output = recstream().args(["train", "--help"]).output().expect("run");
    let help = String::from_utf8_lossy(&output.stdout);
    for default in [
        "[default: 100]",
        "[default: 20]",
        "[default: 0.005]",
        "[default: 0.02]",
        "[default: 0.1]",
    ] {
        assert!(help.contains(default), "{default} in train --help");
    }
}

/// Runs `recstream args` with stdout a pipe nobody reads any more (as in
/// `| head -1` once head has its line): every write fails with EPIPE.
fn with_closed_stdout(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    std::process::Command::new(assert_cmd::cargo::cargo_bin("recstream"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run")
}

#[test]
fn printing_to_a_closed_pipe_ends_quietly_instead_of_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, items) = synthetic_files(dir.path());
    let model = train(dir.path(), &ratings, &items);
    let model = model.to_string_lossy();
    for args in [
        vec!["recommend", "--model", &model, "--user", "7"],
        vec!["recommend", "--model", &model, "--user", "7", "--json"],
        vec!["model", "info", &model],
    ] {
        let output = with_closed_stdout(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            output.status.success(),
            "{args:?}: {:?} {stderr}",
            output.status
        );
    }
}

#[test]
fn zero_negative_and_nan_durations_and_rates_are_refused_by_the_command_line() {
    for args in [
        vec!["consume", "--brokers", "127.0.0.1:9", "--idle-timeout=-1"],
        vec![
            "consume",
            "--brokers",
            "127.0.0.1:9",
            "--idle-timeout",
            "NaN",
        ],
        vec![
            "produce",
            "--brokers",
            "127.0.0.1:9",
            "--uids",
            "1..5",
            "--rate",
            "0",
        ],
        vec![
            "bench",
            "freshness",
            "--brokers",
            "127.0.0.1:9",
            "--users",
            "0",
        ],
        vec![
            "bench",
            "latency",
            "--brokers",
            "127.0.0.1:9",
            "--duration=-3",
        ],
        vec![
            "bench",
            "replies",
            "--brokers",
            "127.0.0.1:9",
            "--expect",
            "1",
            "--idle-timeout",
            "inf",
        ],
        vec!["learn", "--brokers", "127.0.0.1:9", "--snapshot-every", "0"],
        vec!["serve", "--brokers", "127.0.0.1:9", "--batch-size", "0"],
    ] {
        let output = recstream().args(&args).output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?} is a usage error: {stderr}"
        );
        assert!(stderr.contains("invalid value"), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn an_absurd_rating_is_refused_and_no_broken_model_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ratings, _) = synthetic_files(dir.path());
    let mut text = std::fs::read_to_string(&ratings).expect("ratings");
    text.push_str("1\t2\t1e30\t5\n");
    std::fs::write(&ratings, text).expect("write");
    for (scale, expected) in [
        (Some("1,5"), "outside the rating scale 1..=5"),
        (None, "training diverged"),
    ] {
        let out = dir.path().join("broken.rsm");
        let mut command = recstream();
        command
            .args(["train", "--quiet", "--n-epochs", "5", "--ratings"])
            .arg(&ratings)
            .arg("--out")
            .arg(&out);
        if let Some(scale) = scale {
            command.args(["--rating-scale", scale]);
        }
        let output = command.output().expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{scale:?}: {stderr}");
        assert!(stderr.contains(expected), "{scale:?}: {stderr}");
        assert!(!out.exists(), "{scale:?}: no model file written");
    }
}
