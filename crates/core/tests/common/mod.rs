//! Helpers shared by the core's fuzz suites.

use proptest::test_runner::Config as ProptestConfig;

/// Cases per property: [`recstream_core::testing::fuzz_cases`].
pub fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: recstream_core::testing::fuzz_cases(),
        ..ProptestConfig::default()
    }
}
