//! The operator's files in `deploy/` read only metrics the binary exports.
//!
//! A dashboard panel or an alert over a metric name that does not exist
//! shows nothing and never fires, and nobody notices until the day it was
//! needed. So this test starts `recstream run` (a worker and a learner on the
//! embedded broker), gives it requests, a bad request and ratings until every
//! series the files read has a sample (histograms and labelled counters
//! appear only once something is recorded), scrapes `/metrics`, and checks
//! every `recstream_*` name in the dashboard's queries and the rules'
//! expressions against the scrape. `promtool` then checks the rules and runs
//! their unit tests (`deploy/prometheus/alerts_test.yml`), which make each
//! alert fire on purpose.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// The repository's `deploy/` folder.
fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// `recstream_*` identifiers in a PromQL expression (or any text).
fn metric_names(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|token| token.starts_with("recstream_"))
        .map(str::to_string)
        .collect()
}

/// The metric names the dashboard's queries read: panel targets (`expr`)
/// and template variables (`query`, `definition`), not the descriptions.
fn dashboard_metrics(dashboard: &Value) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut stack = vec![dashboard];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "query" | "definition", Value::String(expr)) => {
                            names.extend(metric_names(expr));
                        }
                        _ => stack.push(value),
                    }
                }
            }
            Value::Array(values) => stack.extend(values),
            _ => {}
        }
    }
    names
}

/// The metric names the rules' `expr:` fields read, one-line or block
/// scalars (the lines indented deeper than the key), not the annotations.
fn rules_metrics(rules: &str) -> BTreeSet<String> {
    let indent = |line: &str| line.len() - line.trim_start().len();
    let mut names = BTreeSet::new();
    let mut lines = rules.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        names.extend(metric_names(rest));
        while let Some(next) = lines.peek() {
            if !next.trim().is_empty() && indent(next) <= indent(line) {
                break;
            }
            names.extend(metric_names(next));
            lines.next();
        }
    }
    names
}

/// Names in a Prometheus text scrape: every sample's name, and every
/// family's from its `# TYPE` line (so `x` counts when `x_bucket` is there).
fn scraped_metrics(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| match line.strip_prefix("# TYPE ") {
            Some(rest) => rest.split_whitespace().next(),
            None if line.starts_with('#') => None,
            None => line.split(['{', ' ']).next(),
        })
        .filter(|name| !name.is_empty())
        .map(str::to_string)
        .collect()
}

/// `promtool`, or `None` (after saying so loudly) outside CI.
fn promtool() -> Option<PathBuf> {
    on_path("promtool").or_else(|| {
        missing_tool("promtool is not installed; .ci/run installs it (apt-get install prometheus)")
    })
}

#[test]
fn the_parsers_find_names_in_expressions_only() {
    let rules = "      - alert: A\n        expr: |\n          rate(recstream_a_total[5m]) > 0\n          and on() recstream_b\n        for: 5m\n        annotations:\n          description: see recstream_c\n      - alert: B\n        expr: recstream_d == 0\n";
    assert_eq!(
        rules_metrics(rules),
        ["recstream_a_total", "recstream_b", "recstream_d"]
            .map(String::from)
            .into()
    );
    let dashboard = serde_json::json!({
        "description": "recstream_not_a_query",
        "panels": [{"targets": [{"expr": "histogram_quantile(0.99, sum by (le) (rate(recstream_x_bucket{job=~\"recstream-worker\"}[5m])))"}]}],
        "templating": {"list": [{"query": {"query": "label_values(recstream_y, job)"}}]}
    });
    assert_eq!(
        dashboard_metrics(&dashboard),
        ["recstream_x_bucket", "recstream_y"]
            .map(String::from)
            .into()
    );
    let scrape = "# TYPE recstream_x histogram\nrecstream_x_bucket{le=\"1\"} 3\nrecstream_y{job=\"a\"} 1\nrecstream_z 2\n";
    assert_eq!(
        scraped_metrics(scrape),
        [
            "recstream_x",
            "recstream_x_bucket",
            "recstream_y",
            "recstream_z"
        ]
        .map(String::from)
        .into()
    );
}

#[test]
fn every_metric_the_dashboard_and_the_alerts_read_is_exported_by_a_live_worker_and_learner() {
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy_dir().join("grafana/recstream.json")).unwrap(),
    )
    .unwrap();
    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/alerts.yml")).unwrap();
    let (in_dashboard, in_rules) = (dashboard_metrics(&dashboard), rules_metrics(&rules));
    // The premise: the parsers found what the files are about.
    for name in [
        "recstream_consumer_lag",
        "recstream_freshness_seconds_bucket",
        "recstream_ready",
    ] {
        assert!(in_dashboard.contains(name), "{name} in {in_dashboard:?}");
        assert!(in_rules.contains(name), "{name} in {in_rules:?}");
    }

    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let model = synthetic_model(dir.path());
    let metrics = format!("127.0.0.1:{}", free_port());
    let run = Run::start(&model, dir.path(), &["--metrics-addr", &metrics]);
    let broker = run.broker.clone();
    let learner_ready = r#"recstream_ready{component="learner"}"#;
    assert!(
        wait_ready(&metrics, Duration::from_secs(60)),
        "the worker got ready"
    );
    assert_eq!(
        wait_metric(&metrics, learner_ready, Duration::from_secs(60), |v| v
            == 1.0),
        Some(1.0),
        "the learner got ready"
    );

    // Requests and a bad one: replies, latency, lag, a dead letter.
    let mut batch = requests("ops", 20, 20);
    batch.push(b"not json".to_vec());
    produce(&broker, IN, &batch);
    // Ratings, then requests for the rated user until a reply reflects one:
    // the learner's accuracy, the worker's updates and freshness.
    let ratings: Vec<Vec<u8>> = (1..=5)
        .map(|iid| format!(r#"{{"uid": 7, "iid": {iid}, "rating": 4}}"#).into_bytes())
        .collect();
    produce(&broker, RATINGS, &ratings);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = String::new();
    let mut missing = BTreeSet::new();
    while Instant::now() < deadline {
        produce(&broker, IN, &[br#"{"uid": 7}"#.to_vec()]);
        text = http_get(&metrics, "/metrics").map_or_else(String::new, |(_, body)| body);
        let scraped = scraped_metrics(&text);
        missing = in_dashboard
            .union(&in_rules)
            .filter(|name| !scraped.contains(*name))
            .cloned()
            .collect();
        if missing.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(run);
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts read metrics that a live worker and learner do not export: {missing:?}\n\nscrape:\n{text}"
    );
}

#[test]
fn promtool_accepts_the_rules_and_config_and_every_alert_fires_in_its_unit_test() {
    let Some(promtool) = promtool() else {
        return;
    };
    let prometheus = deploy_dir().join("prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["check", "config", "prometheus.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let output = Command::new(&promtool)
            .args(args)
            .current_dir(&prometheus)
            .output()
            .expect("run promtool");
        assert!(
            output.status.success(),
            "promtool {args:?} failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // The premise: the unit tests cover every alert in the rules.
    let rules = std::fs::read_to_string(prometheus.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(prometheus.join("alerts_test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 5, "{alerts:?}");
    for alert in alerts {
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "alerts_test.yml has no case for {alert}"
        );
    }
}
