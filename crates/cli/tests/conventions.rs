//! Shell completions and man pages, generated from the clap definitions by the real binary.

// Test helpers may panic: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use assert_cmd::Command;

fn recstream() -> Command {
    Command::cargo_bin("recstream").expect("the recstream binary is built")
}

/// Every subcommand a user can complete or look up.
const SUBCOMMANDS: [&str; 14] = [
    "run",
    "serve",
    "learn",
    "produce",
    "consume",
    "data",
    "train",
    "retrain",
    "recommend",
    "eval",
    "model",
    "bench",
    "completions",
    "man",
];

fn stdout_of(args: &[&str]) -> String {
    let output = recstream().args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn completions_for_bash_zsh_and_fish_name_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout_of(&["completions", shell]);
        for name in SUBCOMMANDS {
            assert!(script.contains(name), "{shell} completions lack {name}");
        }
        // Nested subcommands too.
        assert!(
            script.contains("import") && script.contains("surprise"),
            "{shell}"
        );
    }
    let fish = stdout_of(&["completions", "fish"]);
    assert!(fish.contains("complete -c recstream"), "{fish}");
    let err = recstream().args(["completions", "tcsh"]).output().unwrap();
    assert!(!err.status.success());
}

#[test]
fn the_man_page_lists_the_subcommands_and_dir_writes_one_page_each() {
    let page = stdout_of(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH recstream 1"),
        "{page}"
    );
    for name in SUBCOMMANDS {
        assert!(
            page.contains(&format!("recstream\\-{name}(1)")),
            "man page lacks {name}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    recstream()
        .args(["man", "--dir"])
        .arg(&pages)
        .assert()
        .success();
    for name in [
        "recstream.1",
        "recstream-train.1",
        "recstream-model-import.1",
    ] {
        let text = std::fs::read_to_string(pages.join(name)).unwrap();
        assert!(text.contains(".TH"), "{name}");
    }
}
