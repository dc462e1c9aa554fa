//! `recstream completions SHELL` and `recstream man`: generated from the clap definitions.
//!
//! Both are produced from the same `Command` that parses the arguments, so
//! they cannot drift from `--help`: a new flag appears in the completions
//! and the man page with no extra work. Packagers install the output
//! (`/usr/share/bash-completion/completions/recstream`,
//! `/usr/share/man/man1/recstream.1`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use clap_complete::Shell;

/// Arguments of `recstream completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Arguments of `recstream man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write one page per command and subcommand (recstream.1,
    /// recstream-train.1, ...) into this folder instead of the top page to stdout.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

/// Writes the completion script for `args.shell` to stdout.
pub fn completions(args: CompletionsArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "recstream", &mut out);
    out.flush().context("writing the completions")?;
    Ok(())
}

/// Writes the man page of `command` to stdout, or every page into `args.dir`.
pub fn man(args: ManArgs, command: clap::Command) -> anyhow::Result<()> {
    match args.dir {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(command, &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
        None => {
            let mut out = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut out)
                .context("writing the man page")?;
            out.flush().context("writing the man page")?;
        }
    }
    Ok(())
}
