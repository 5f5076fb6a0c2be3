//! The official `huggingface_hub` Python client against the HF emulator
//! (`tests/python/hf_official_client.py`), so the emulator is checked against a client
//! nobody here wrote.
//!
//! The interpreter comes from `HOKUSAI_TEST_PYTHON` (a virtualenv with
//! `scripts/requirements-test.txt` installed, prepared by `scripts/test`). Without it the
//! test fails: it never skips.

use std::path::PathBuf;
use std::time::Duration;

use emulator::{Emulator, EmulatorConfig};

const NAMESPACE: &str = "hokusai-test";

fn python() -> String {
    std::env::var("HOKUSAI_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "HOKUSAI_TEST_PYTHON is not set: point it at a Python with \
             `pip install -r scripts/requirements-test.txt` (scripts/test does this)"
        )
    })
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/hf_official_client.py")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_python_client_drives_the_emulator_through_a_full_lifecycle() {
    let python = python();
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator");

    let run = tokio::process::Command::new(&python)
        .arg(script())
        .env("HOKUSAI_EMULATOR_V2_URL", emu.v2_url())
        .env("HOKUSAI_EMULATOR_TOKEN", &emu.token)
        .env("HOKUSAI_EMULATOR_NAMESPACE", NAMESPACE)
        .env("HF_HUB_DISABLE_TELEMETRY", "1")
        .env("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the client finished within 2 minutes")
        .unwrap_or_else(|e| panic!("cannot run {python}: {e}"));

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "official client failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("OK: the official client"), "{stdout}");
    assert!(
        emu.endpoints().is_empty(),
        "the client deleted its endpoint"
    );
}
