//! Gathers the benchmarks' JSON files (`--json` of `bench-predict`, `bench-queue`,
//! `bench-pipeline` and `load-test`) into one report with the machine's description:
//! `DIR/report.json` and `DIR/report.md` (a markdown table). `scripts/bench` runs it last.
//!
//! `bench-report --dir DIR --benchmarks predict,queue,... --load-start "1.00 0.50 0.20"
//! --started-at RFC3339 --mode full|quick`. A benchmark whose `DIR/<name>.json` is missing
//! (it failed) is reported as `failed`; the program then exits with 1 after writing.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{Value, json};

struct Args {
    dir: PathBuf,
    benchmarks: Vec<String>,
    load_start: String,
    started_at: String,
    mode: String,
}

fn args() -> Args {
    let mut parsed = Args {
        dir: PathBuf::from("target/bench"),
        benchmarks: Vec::new(),
        load_start: String::new(),
        started_at: String::new(),
        mode: "full".to_owned(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        match (pair[0].as_str(), pair.get(1)) {
            ("--dir", Some(v)) => parsed.dir = PathBuf::from(v),
            ("--benchmarks", Some(v)) => {
                parsed.benchmarks = v.split(',').map(str::to_owned).collect()
            }
            ("--load-start", Some(v)) => parsed.load_start = v.clone(),
            ("--started-at", Some(v)) => parsed.started_at = v.clone(),
            ("--mode", Some(v)) => parsed.mode = v.clone(),
            _ => {
                eprintln!(
                    "usage: bench-report --dir DIR --benchmarks a,b --load-start L \
                     --started-at T --mode full|quick"
                );
                std::process::exit(2);
            }
        }
    }
    parsed
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The first three fields of a `/proc/loadavg` line as numbers.
fn load_average(line: &str) -> Value {
    let values: Vec<f64> = line
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    json!(values)
}

fn command(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn machine(args: &Args) -> Value {
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|m| m.trim().to_owned());
    let memory_kib: Option<u64> = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok());
    let fd_limit: Option<u64> = read("/proc/self/limits")
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    let dirty =
        command("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": model,
        "memory_mib": memory_kib.map(|k| k / 1024),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "rustc": command("rustc", &["--version"]),
        "git_commit": command("git", &["rev-parse", "HEAD"]),
        "git_dirty": dirty,
        "started_at": args.started_at,
        "finished_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "load_average_start": load_average(&args.load_start),
        "load_average_end": load_average(&read("/proc/loadavg")),
        "fd_limit": fd_limit,
    })
}

fn number(v: &Value) -> String {
    match v.as_f64() {
        None => "–".to_owned(),
        Some(x) if x.abs() >= 100.0 => format!("{x:.0}"),
        Some(x) if x.abs() >= 10.0 => format!("{x:.1}"),
        Some(x) => format!("{x:.3}"),
    }
}

fn markdown(report: &Value) -> String {
    let m = &report["machine"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Benchmark report ({} run)\n",
        report["mode"].as_str().unwrap_or("")
    );
    let _ = writeln!(
        out,
        "Machine: {} cores ({}), {} MiB, Linux {}, {}; commit {}{}; {} → {}; load average \
         {} at start, {} at end; `ulimit -n` {}.\n",
        m["cores"],
        m["cpu_model"].as_str().unwrap_or("unknown CPU"),
        m["memory_mib"],
        m["kernel"].as_str().unwrap_or(""),
        m["rustc"].as_str().unwrap_or("rustc ?"),
        m["git_commit"].as_str().unwrap_or("?"),
        if m["git_dirty"] == true {
            " (dirty)"
        } else {
            ""
        },
        m["started_at"].as_str().unwrap_or(""),
        m["finished_at"].as_str().unwrap_or(""),
        m["load_average_start"],
        m["load_average_end"],
        m["fd_limit"],
    );
    let _ = writeln!(
        out,
        "| benchmark | figure | median | unit | baseline (same run) | ratio | target | met | runs |"
    );
    let _ = writeln!(out, "|---|---|---:|---|---|---:|---|---|---:|");
    for bench in report["benchmarks"].as_array().into_iter().flatten() {
        let name = bench["benchmark"].as_str().unwrap_or("?");
        if bench["status"] != "ok" {
            let _ = writeln!(
                out,
                "| {name} | **failed** (see its output) | | | | | | | |"
            );
            continue;
        }
        for f in bench["figures"].as_array().into_iter().flatten() {
            let baseline = match &f["baseline"] {
                Value::Null => "–".to_owned(),
                b => format!(
                    "{} {}",
                    b["name"].as_str().unwrap_or(""),
                    number(&b["median"])
                ),
            };
            let met = match f["met"].as_bool() {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "–",
            };
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} | {baseline} | {} | {} | {met} | {} |",
                f["name"].as_str().unwrap_or(""),
                number(&f["median"]),
                f["unit"].as_str().unwrap_or(""),
                number(&f["ratio"]),
                f["target"]["text"].as_str().unwrap_or("–"),
                f["repetitions"],
            );
        }
    }
    let notes: Vec<String> = report["benchmarks"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|b| {
            let name = b["benchmark"].as_str().unwrap_or("?").to_owned();
            b["notes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(move |n| n.as_str().map(|n| format!("- {name}: {n}")))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(out, "\nNotes:\n\n{}", notes.join("\n"));
    }
    out
}

fn main() {
    let args = args();
    let mut failed = false;
    let benchmarks: Vec<Value> = args
        .benchmarks
        .iter()
        .map(|name| {
            let path = args.dir.join(format!("{name}.json"));
            match std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            {
                Some(mut result) => {
                    result["status"] = json!("ok");
                    result
                }
                None => {
                    failed = true;
                    json!({"benchmark": name, "status": "failed", "figures": []})
                }
            }
        })
        .collect();
    let report = json!({
        "mode": args.mode,
        "machine": machine(&args),
        "method": "each benchmark measures its baseline (raw broker, direct upstream, memory \
                   before the load) in the same run; figures are medians of the repetitions; \
                   ratios are between medians",
        "benchmarks": benchmarks,
    });
    let text = serde_json::to_string_pretty(&report).expect("serialize");
    std::fs::write(args.dir.join("report.json"), text).expect("write report.json");
    let md = markdown(&report);
    std::fs::write(args.dir.join("report.md"), &md).expect("write report.md");
    print!("{md}");
    if failed {
        std::process::exit(1);
    }
}
