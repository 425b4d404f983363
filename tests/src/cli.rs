//! The `tally` binary, for the tests that run it as a person does (the
//! `dev` module of the end-to-end tests).
//!
//! Cargo hands a test its own package's binaries (`CARGO_BIN_EXE_<name>`),
//! and `tally` is tally-cli's, not this package's; a binary of another
//! package cannot be a dependency on stable Cargo. So the first test that
//! needs it asks Cargo to build it, with the Cargo running the tests and
//! the same target directory, and runs what Cargo reports it built: on a
//! clean clone that builds it once, under `cargo test --workspace` (which
//! has built it already) it costs a freshness check, and it is never a
//! stale binary left from another checkout, as looking for
//! `target/debug/tally` could find.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The path of a `tally` built from this checkout, built on first use.
pub fn tally_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(build).clone()
}

fn build() -> PathBuf {
    // The Cargo running the tests, as it tells them; else the one on PATH.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let output = Command::new(&cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--package",
            "tally-cli",
            "--bin",
            "tally",
            "--message-format",
            "json-render-diagnostics",
        ])
        .output()
        .unwrap_or_else(|e| panic!("run {} build for the tally binary: {e}", cargo.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        panic!(
            "cargo build --package tally-cli --bin tally failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == "tally"
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| {
            panic!("cargo build --package tally-cli --bin tally reported no executable:\n{stdout}")
        })
}
