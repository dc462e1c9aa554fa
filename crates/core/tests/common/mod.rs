//! Helpers shared by the core's fuzz suites.

use proptest::test_runner::Config as ProptestConfig;

/// Cases per property: `PROPTEST_CASES`, else 10,000 under CI (`CI` set),
/// else 1,000.
pub fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if std::env::var_os("CI").is_some() {
            10_000
        } else {
            1_000
        });
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}
