//! Writing results to stdout without panicking when the reader goes away.
//!
//! `println!` panics when stdout is a closed pipe (`recstream recommend ... |
//! head -1`). Commands print with [`out!`] instead, which returns the write
//! error; `main` treats a broken pipe as the reader's normal way of saying
//! "enough" and exits quietly with success, like `cat` or `grep` would.

/// `println!` that returns the write error (with `?`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)?
    }};
}

pub(crate) use out;

/// True when `error` (or what caused it) is a write to a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
