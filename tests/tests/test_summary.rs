//! `scripts/test-summary`, the sum behind `scripts/test`'s last line: passed and failed
//! counts of every `test result:` line, and 1 failed for each test binary whose section
//! ends without one (it crashed or was killed), wherever it sits in the output.

use std::io::Write;
use std::process::Command;

/// Runs the script on `output` (a `cargo test` log) and returns its `passed failed aborted`.
fn summary(output: &str) -> String {
    let mut log = tempfile();
    log.1.write_all(output.as_bytes()).expect("write the log");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-summary");
    let out = Command::new(script)
        .arg(&log.0)
        .output()
        .expect("run scripts/test-summary");
    assert!(out.status.success(), "{out:?}");
    std::fs::remove_file(&log.0).ok();
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

fn tempfile() -> (std::path::PathBuf, std::fs::File) {
    let path = std::env::temp_dir().join(format!("test-summary-{}.log", uuid::Uuid::new_v4()));
    let file = std::fs::File::create(&path).expect("create the log");
    (path, file)
}

const OK_LIB: &str = "     Running unittests src/lib.rs (target/debug/deps/shared-1)\n\n\
running 3 tests\ntest a ... ok\n\n\
test result: ok. 3 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\n";
const FAILED_CLI: &str = "     Running tests/cli.rs (target/debug/deps/cli-2)\n\n\
running 2 tests\ntest b ... FAILED\n\n\
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\n\
error: test failed, to rerun pass `-p tests --test cli`\n";
const CRASHED: &str = "     Running tests/saga.rs (target/debug/deps/saga-3)\n\n\
running 4 tests\ntest c ... ok\n\
error: test failed, to rerun pass `-p tests --test saga`\n\nCaused by:\n  \
process didn't exit successfully: (signal: 6, SIGABRT: process abort signal)\n";
const DOC_TESTS: &str = "   Doc-tests shared\n\nrunning 0 tests\n\n\
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n";

#[test]
fn every_section_with_a_result_is_summed() {
    assert_eq!(summary(&[OK_LIB, FAILED_CLI, DOC_TESTS].concat()), "4 1 0");
}

#[test]
fn a_binary_that_ends_without_a_result_counts_as_one_failed() {
    assert_eq!(summary(&[OK_LIB, CRASHED, FAILED_CLI].concat()), "4 2 1");
    assert_eq!(summary(&[OK_LIB, CRASHED].concat()), "3 1 1");
    assert_eq!(summary(&[CRASHED, CRASHED, DOC_TESTS].concat()), "0 2 2");
}

#[test]
fn no_output_is_nothing() {
    assert_eq!(summary(""), "0 0 0");
}
