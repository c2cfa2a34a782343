//! The command line: bad input gets one clear line and a non-zero exit; a short run writes its files.

use std::path::Path;
use std::process::{Command, Output};

fn imm(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imm")).args(args).current_dir(dir).output().expect("run imm")
}

/// A fresh directory of its own: tests run in parallel, and two with the same name must not share one.
fn scratch(name: &str) -> std::path::PathBuf {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("imm-cli-{}-{name}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn assert_clean_failure(args: &[&str], expected: &str) {
    let dir = scratch("fail");
    let out = imm(args, &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(stderr.contains(expected), "{args:?}: stderr lacks '{expected}':\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "{args:?} panicked:\n{stderr}");
    assert!(stderr.trim().lines().count() <= 4, "{args:?}: not a short message:\n{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A short `train` on moons with `extra` options.
fn train_with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--preset", "moons", "--kimg", "1", "--eval-samples", "10"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn bad_input_is_a_clear_error() {
    assert_clean_failure(&["train", "--preset", "nope"], "unknown preset 'nope'");
    assert_clean_failure(&train_with(&["--batch", "100", "--particles", "8"]), "multiple of the number of particles");
    assert_clean_failure(&train_with(&["--eval-steps", "0"]), "sampling step counts must be positive, got 0");
    assert_clean_failure(&train_with(&["--eval-steps", "1,-2"]), "sampling step counts must be positive, got -2");
    assert_clean_failure(&["train", "--preset", "moons", "--kimg", "-3"], "expected a positive number");
    assert_clean_failure(&train_with(&["--eps", "0.9", "--t-max", "0.5"]), "0 <= eps < T < 1");
    assert_clean_failure(&train_with(&["--grid", "eta:1.4", "--eval-steps", "2,4"]), "gives 2 steps, not 4");
    let dir = scratch("blocker");
    let blocker = dir.join("a-file");
    std::fs::write(&blocker, "x").unwrap();
    let out_dir = blocker.join("run").to_string_lossy().into_owned();
    assert_clean_failure(&train_with(&["--out", &out_dir]), "cannot create output directory");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_short_run_writes_config_metrics_eval_and_plot() {
    let dir = scratch("run");
    let out = imm(
        &["train", "--preset", "moons", "--kimg", "4", "--batch", "128", "--eval-samples", "200", "--eval-steps", "1,3", "--out", "run"],
        &dir,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.join("run");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["method"], "imm");
    assert_eq!(config["train"]["batch"], 128);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!records.is_empty());
    let last = records.last().unwrap();
    assert_eq!(last["nimg"].as_u64(), Some(4096));
    assert!(last["loss"].as_f64().unwrap().is_finite() && last["sec_per_kimg"].as_f64().unwrap() > 0.0);
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval["metric"], "energy_distance");
    assert!(eval["floor"].as_f64().unwrap() > 0.0);
    assert!(eval["steps"]["1"].as_f64().unwrap() > 0.0 && eval["steps"]["3"].as_f64().unwrap() > 0.0);
    let png = std::fs::read(run.join("samples.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // `imm eval` reads the run's EMA snapshot: the same held-out points, hence the same floor.
    let out = imm(&["eval", "--weights", "run/ema.safetensors", "--steps", "1,3", "--n", "200", "--json", "e.json", "--device", "cpu"], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("held-out moons points"));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("e.json")).unwrap()).unwrap();
    assert_eq!(report["metric"], "energy-distance");
    assert_eq!(report["floor"], eval["floor"]);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["steps"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 3]);
    assert!(rows.iter().all(|r| r["value"].as_f64().unwrap() > 0.0 && r["value"].as_f64().unwrap() < 1.0), "{rows:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--method meanflow` trains through the same run, and its card tells `imm eval` how to sample.
#[test]
fn meanflow_runs_and_evaluates_from_its_card() {
    let dir = scratch("meanflow");
    let args = ["train", "--preset", "moons", "--method", "meanflow", "--kimg", "2", "--batch", "128", "--eval-samples", "200", "--eval-steps", "1,2"];
    let out = imm(&args, &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let run = dir.join("runs/moons-meanflow");
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!((config["method"].as_str(), config["method_config"]["fd_step"].as_f64()), (Some("meanflow"), Some(3e-3)));
    let out = imm(&["eval", "--weights", "runs/moons-meanflow/ema.safetensors", "--steps", "1,2", "--n", "200", "--json", "e.json", "--device", "cpu"], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("e.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.iter().map(|r| r["steps"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert!(rows.iter().all(|r| r["value"].as_f64().unwrap() > 0.0 && r["value"].as_f64().unwrap() < 1.0), "{rows:?}");
    let weights = run.join("ema.safetensors").to_string_lossy().into_owned();
    assert_clean_failure(&["eval", "--weights", &weights, "--sampler", "heun", "--device", "cpu"], "MeanFlow samples with its own uniform steps");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--device cuda` says what it lacks: the `cuda` feature in a build without it, else (on a machine
/// without the toolkit) the CUDA headers it needs.
#[test]
fn cuda_without_cuda_is_a_clear_error() {
    let args = ["bench", "train", "--preset", "mnist-tiny", "--device", "cuda"];
    if cfg!(feature = "cuda") {
        let toolkit = ["CUDA_PATH", "CUDA_HOME"].iter().any(|v| std::env::var_os(v).is_some())
            || std::path::Path::new("/usr/local/cuda/include/crt/mma.h").exists();
        if !toolkit {
            assert_clean_failure(&args, "set CUDA_PATH");
        }
    } else {
        assert_clean_failure(&args, "build with `cargo run --release --features cuda");
    }
}

/// `imm bench launches` refuses the CPU backend and malformed rows, counts the page's rows, and
/// reports the training loop's device reads per step (at most one per 10 steps).
#[test]
fn bench_launches_counts_the_page_rows() {
    assert_clean_failure(&["bench", "launches", "--device", "cpu"], "use --device wgpu");
    assert_clean_failure(&["bench", "launches", "--presets", "mnist-tiny"], "PRESET:BATCH");
    assert_clean_failure(&["bench", "launches", "--presets", "mnist-tiny:0"], "not a positive batch size");
    let dir = scratch("launches");
    let json = dir.join("launches.json");
    let out = imm(&["bench", "launches", "--presets", "", "--json", json.to_str().unwrap()], &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "IMM and flow matching on the 2D MLP");
    for row in rows {
        for what in ["train", "sample"] {
            let c = &row[what];
            let by_kernel: u64 = c["by_kernel"].as_array().unwrap().iter().map(|k| k[1].as_u64().unwrap()).sum();
            assert_eq!(c["launches"].as_u64().unwrap(), by_kernel, "{row}");
            assert!(c["buffers"].as_u64().unwrap() > 0 && c["buffer_bytes"].as_u64().unwrap() > 0, "{row}");
        }
        // A training step is a forward and a backward pass and an update: more than sampling's one pass.
        assert!(row["train"]["launches"].as_u64() > row["sample"]["launches"].as_u64(), "{row}");
        // The training loop reads the device once per chunk of steps, not once per step.
        let reads = row["reads_per_step"].as_f64().unwrap();
        assert!(reads > 0.0 && reads <= 0.1, "{reads} device reads per step: {row}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `imm bench mmd` checks both fused implementations against the reference before timing, and
/// refuses a device the kernels do not run on.
#[test]
fn bench_mmd_checks_then_times() {
    assert_clean_failure(&["bench", "mmd", "--device", "cpu"], "run on wgpu and CUDA devices");
    assert_clean_failure(&["bench", "mmd", "--particles", "17", "--dim", "8"], "--particles must be 1 to 16");
    let dir = scratch("bench");
    let out = imm(&["bench", "mmd", "--groups", "5", "--particles", "3", "--dim", "70", "--iters", "1"], &dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let errors: Vec<f64> = stdout
        .lines()
        .filter_map(|l| l.split_once("against the reference: relative error "))
        .flat_map(|(_, rest)| rest.split([' ', ',']).filter_map(|w| w.parse().ok()).collect::<Vec<f64>>())
        .collect();
    assert!(errors.len() == 4 && errors.iter().all(|&e| e <= 1e-4), "{stdout}");
    for row in ["reference tensor ops", "fused Wgsl kernels", "fused CubeCl kernels", "floor: "] {
        assert!(stdout.contains(row), "no '{row}' in:\n{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `imm bench train` and `imm bench sample` print their figures and write them as JSON.
#[test]
fn bench_train_and_sample_report_speed() {
    let dir = scratch("bench");
    let args = ["bench", "train", "--preset", "mnist-tiny", "--batch", "8", "--iters", "1", "--device", "cpu", "--precision", "f16", "--json", "t.json"];
    let out = imm(&args, &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("images/s"));
    let t: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("t.json")).unwrap()).unwrap();
    assert_eq!((t["preset"].as_str(), t["batch"].as_u64(), t["method"].as_str()), (Some("mnist-tiny"), Some(8), Some("imm")));
    assert_eq!(t["precision"], "f16");
    assert!(t["images_per_s"].as_f64().unwrap() > 0.0 && t["params"].as_u64().unwrap() > 300_000);
    let args = ["bench", "sample", "--preset", "mnist-tiny", "--batches", "1,3", "--steps", "1,2", "--iters", "1", "--device", "cpu", "--precision", "bf16", "--json", "s.json"];
    let out = imm(&args, &dir);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("network in bf16"));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&std::fs::read(dir.join("s.json")).unwrap()).unwrap();
    let cells: Vec<(u64, u64)> = rows.iter().map(|r| (r["batch"].as_u64().unwrap(), r["steps"].as_u64().unwrap())).collect();
    assert_eq!(cells, [(1, 1), (1, 2), (3, 1), (3, 2)]);
    assert!(rows.iter().all(|r| r["ms_per_batch"].as_f64().unwrap() > 0.0));
    assert_clean_failure(&["bench", "train", "--preset", "mnist-tiny", "--batch", "6", "--device", "cpu"], "multiple of");
    // WGSL has no bf16: a clear refusal, not a panic inside a kernel.
    for what in ["train", "sample"] {
        assert_clean_failure(&["bench", what, "--preset", "mnist-tiny", "--device", "wgpu", "--precision", "bf16"], "cannot compute in bf16");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
