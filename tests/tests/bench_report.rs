//! `scripts/bench --quick` runs every benchmark (predict, queue, pipeline, load against the
//! real `hokusai-serve dev`) at smoke sizes and writes a well-formed report: the machine
//! description, and per benchmark figures with their repetitions, medians, same-run
//! baselines, ratios and targets; the markdown table has a row per figure.
//!
//! The benchmark binaries are the ones cargo built for this test (`BENCH_BIN_DIR`), next to
//! `hokusai-serve` (`scripts/test` builds it first). PostgreSQL and RabbitMQ must run.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The whole quick run must finish within this (it takes well under a minute).
const LIMIT: Duration = Duration::from_secs(90);

fn run_quick_bench(out: &Path) -> (bool, String) {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_bench-report"))
        .parent()
        .expect("target/<profile>");
    assert!(
        bin_dir.join("hokusai-serve").exists(),
        "{} is missing: build it first (`cargo build --bin hokusai-serve`, as scripts/test does)",
        bin_dir.join("hokusai-serve").display()
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench");
    let mut child = Command::new("bash")
        .arg(script)
        .args(["--quick", "--out"])
        .arg(out)
        .env("BENCH_BIN_DIR", bin_dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("scripts/bench starts");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            let mut stdout = String::new();
            use std::io::Read as _;
            child
                .stdout
                .take()
                .expect("stdout")
                .read_to_string(&mut stdout)
                .ok();
            eprintln!("quick bench took {:?}", started.elapsed());
            return (status.success(), stdout);
        }
        if started.elapsed() > LIMIT {
            child.kill().ok();
            panic!("scripts/bench --quick did not finish within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn assert_number(v: &Value, what: &str) -> f64 {
    let x = v
        .as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"));
    assert!(x.is_finite(), "{what} is not finite");
    x
}

#[test]
fn quick_bench_writes_a_well_formed_report() {
    // Arrange
    let out = std::env::temp_dir().join(format!("hokusai-bench-{}", uuid::Uuid::new_v4()));

    // Act
    let (success, stdout) = run_quick_bench(&out);

    // Assert: the run succeeded and both files exist.
    assert!(success, "scripts/bench --quick failed:\n{stdout}");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json written"),
    )
    .expect("report.json is JSON");
    let markdown = std::fs::read_to_string(out.join("report.md")).expect("report.md written");
    assert_eq!(report["mode"], "quick", "{report}");

    // Assert: the machine is described.
    let machine = &report["machine"];
    assert!(assert_number(&machine["cores"], "cores") >= 1.0);
    assert!(assert_number(&machine["memory_mib"], "memory") > 0.0);
    assert!(
        !machine["kernel"].as_str().unwrap_or("").is_empty(),
        "{machine}"
    );
    let rustc = machine["rustc"].as_str().expect("rustc version");
    assert!(rustc.starts_with("rustc "), "{rustc}");
    let commit = machine["git_commit"].as_str().expect("git commit");
    assert!(
        commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
        "{commit}"
    );
    for key in ["load_average_start", "load_average_end"] {
        let load = machine[key].as_array().expect(key);
        assert_eq!(load.len(), 3, "{key}: {machine}");
    }
    for key in ["started_at", "finished_at"] {
        let at = machine[key].as_str().expect(key);
        chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339 date");
    }

    // Assert: every benchmark ran and its figures are complete.
    let benchmarks = report["benchmarks"].as_array().expect("benchmarks");
    let names: Vec<&str> = benchmarks
        .iter()
        .map(|b| b["benchmark"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["predict", "queue", "pipeline", "load"]);
    let mut rows = 0;
    for bench in benchmarks {
        let name = bench["benchmark"].as_str().unwrap_or("");
        assert_eq!(bench["status"], "ok", "{name}: {bench}");
        let figures = bench["figures"].as_array().expect("figures");
        assert!(!figures.is_empty(), "{name} has no figure");
        for f in figures {
            let figure = format!("{name}/{}", f["name"]);
            let samples = f["samples"].as_array().expect("samples");
            assert_eq!(
                f["repetitions"].as_u64(),
                Some(samples.len() as u64),
                "{figure}"
            );
            if samples.is_empty() {
                // Only a row that could not run (SQS without moto) has no sample.
                assert!(f["name"].as_str().unwrap_or("").contains("sqs"), "{figure}");
                continue;
            }
            rows += 1;
            let median = assert_number(&f["median"], &figure);
            for s in samples {
                assert_number(s, &figure);
            }
            if !f["baseline"].is_null() {
                let b = assert_number(&f["baseline"]["median"], &figure);
                let ratio = assert_number(&f["ratio"], &figure);
                assert!(
                    (ratio - median / b).abs() < 1e-9 * ratio.abs().max(1.0),
                    "{figure}"
                );
            }
            if !f["target"].is_null() {
                assert!(f["met"].is_boolean(), "{figure}: {f}");
                assert!(f["target"]["text"].is_string(), "{figure}");
            }
            let label = f["name"].as_str().unwrap_or("");
            assert!(markdown.contains(label), "report.md lacks {figure}");
        }
    }
    assert!(rows >= 15, "only {rows} figures measured");
    let figure_names: Vec<&str> = benchmarks
        .iter()
        .flat_map(|b| b["figures"].as_array().into_iter().flatten())
        .filter_map(|f| f["name"].as_str())
        .collect();
    for expected in [
        "predict p50 at 20 req/s",
        "predict p99 at 20 req/s",
        "dev idle CPU",
    ] {
        assert!(
            figure_names.iter().any(|n| n.starts_with(expected)),
            "no figure named {expected}…: {figure_names:?}"
        );
    }

    // Assert: the load test really held its connections and measured the API's memory.
    let load = &benchmarks[3]["details"];
    let peak = assert_number(&load["memory_mib"]["peak_vmhwm"], "peak RSS");
    let before = assert_number(&load["memory_mib"]["before"], "RSS before");
    assert!(peak >= before && before > 1.0, "{load}");
    let held = load["api_connections"]["saturation_peak"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        held >= 100,
        "the API held {held} connections at saturation, 100 asked"
    );
    assert_eq!(load["open_loop"]["unexpected_status"], 0, "{load}");
    assert_eq!(load["saturation"]["unexpected_status"], 0, "{load}");
    assert!(
        markdown.contains("| benchmark | figure | median |"),
        "{markdown}"
    );
    std::fs::remove_dir_all(&out).ok();
}
