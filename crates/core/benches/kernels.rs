//! Criterion benchmarks placeholder; filled in with the kernel benchmarks.
fn main() {}
