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

/// The error and its causes on one line, as `{:#}` prints them, but
/// without a cause whose words the line already holds: library errors name
/// their cause in their own message and also keep it as their source (for
/// programs that walk the chain), which would otherwise print it twice.
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// True when `error` (or what caused it) is a write to a closed pipe.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read {path}: {source}")]
    struct ReadError {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let error = anyhow::Error::new(ReadError {
            path: "model.rsm",
            source: io,
        })
        .context("loading the model");
        assert_eq!(
            one_line(&error),
            "loading the model: cannot read model.rsm: no such file"
        );
        assert_eq!(
            format!("{error:#}"),
            "loading the model: cannot read model.rsm: no such file: no such file",
            "the premise: the plain chain repeats the cause"
        );
    }

    #[test]
    fn causes_not_in_the_message_are_all_printed() {
        let error = anyhow::anyhow!("broker gone")
            .context("learning")
            .context("the learner failed");
        assert_eq!(
            one_line(&error),
            "the learner failed: learning: broker gone"
        );
    }
}
