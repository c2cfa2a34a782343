//! `scripts/gpu_check.sh run` on this machine, which has no NVIDIA GPU: every missing piece (bundle,
//! NVRTC, headers, driver, libcuda, a driver too old) ends the run with one clear line, a non-zero
//! exit and a report saying why; with a stand-in `nvidia-smi` and libcuda, every stage runs under its
//! timeout and lands in the report (the CUDA ones fail: this test's imm has no CUDA).

use std::path::{Path, PathBuf};
use std::process::Output;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imm-gpu-check-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A stand-in for `nvidia-smi` reporting a GPU whose driver supports `cuda`.
fn fake_nvidia_smi(dir: &Path, cuda: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("nvidia-smi");
    write(
        &path,
        &format!(
            "#!/bin/sh\ncase \"$*\" in\n  *memory.used*) while :; do echo 1234; sleep 0.25; done ;;\n  *--query-gpu*) echo 'NVIDIA Test GPU, 550.54.15, 81559' ;;\n  *) echo '| Driver Version: 550.54.15    CUDA Version: {cuda} |' ;;\nesac\n"
        ),
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// An unpacked bundle with this build's imm, stand-ins for NVRTC and the headers, and the DiT golden file.
fn bundle(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    for file in ["cuda/lib64/libnvrtc.so.12", "cuda/include/crt/mma.h", "cuda/include/cuda_fp16.h"] {
        write(&bundle.join(file), "");
    }
    std::fs::copy(env!("CARGO_BIN_EXE_imm"), bundle.join("imm")).unwrap();
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden");
    std::fs::create_dir_all(bundle.join("golden")).unwrap();
    for ext in ["safetensors", "json"] {
        let name = format!("golden_dit_small.{ext}");
        std::fs::copy(golden.join(&name), bundle.join("golden").join(&name)).unwrap();
    }
    bundle
}

/// `scripts/gpu_check.sh run` on `source` with `env` (an empty value unsets the variable); its
/// output and report.
fn run(dir: &Path, source: &Path, env: &[(&str, &str)]) -> (Output, serde_json::Value) {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut command = std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/gpu_check.sh"));
    command.args(["run", "--json"]).arg(&report).arg(source).env("GPU_CHECK_SECONDS", "25");
    for (key, value) in env {
        match *value {
            "" => command.env_remove(key),
            _ => command.env(key, value),
        };
    }
    let out = command.output().expect("run scripts/gpu_check.sh");
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| panic!("no report ({e}); stderr:\n{}", String::from_utf8_lossy(&out.stderr)));
    (out, serde_json::from_str(&text).unwrap_or_else(|e| panic!("the report is not JSON ({e}):\n{text}")))
}

/// The run failed with `expected` on stderr and in the report's error.
fn assert_refused(out: &Output, report: &serde_json::Value, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.contains(expected), "stderr lacks '{expected}':\n{stderr}");
    assert!(report["error"].as_str().unwrap().contains(expected), "{report}");
    assert_eq!(report["stages"].as_array().unwrap().len(), 0, "{report}");
}

#[test]
fn missing_pieces_end_the_run_with_a_reason() {
    let dir = scratch("missing");
    let (out, report) = run(&dir, &dir.join("nothing.tar.xz"), &[]);
    assert_refused(&out, &report, "no bundle at");

    let bundle = bundle(&dir);
    std::fs::remove_file(bundle.join("cuda/lib64/libnvrtc.so.12")).unwrap();
    let (out, report) = run(&dir, &bundle, &[]);
    assert_refused(&out, &report, "has no NVRTC");
    write(&bundle.join("cuda/lib64/libnvrtc.so.12"), "");
    std::fs::remove_file(bundle.join("cuda/include/crt/mma.h")).unwrap();
    let (out, report) = run(&dir, &bundle, &[]);
    assert_refused(&out, &report, "has no CUDA headers");
    write(&bundle.join("cuda/include/crt/mma.h"), "");

    let absent = dir.join("absent/nvidia-smi");
    let (out, report) = run(&dir, &bundle, &[("NVIDIA_SMI", absent.to_str().unwrap())]);
    assert_refused(&out, &report, "no NVIDIA GPU found");
    assert!(report["gpu"].is_null(), "{report}");

    let smi = fake_nvidia_smi(&dir.join("old"), "12.2");
    let (out, report) = run(&dir, &bundle, &[("NVIDIA_SMI", smi.to_str().unwrap()), ("LD_LIBRARY_PATH", "")]);
    assert_refused(&out, &report, "libcuda.so.1");
    assert_eq!(report["gpu"]["name"], "NVIDIA Test GPU", "{report}");
    write(&dir.join("lib/libcuda.so.1"), "");
    let lib = dir.join("lib");
    let (out, report) = run(&dir, &bundle, &[("NVIDIA_SMI", smi.to_str().unwrap()), ("LD_LIBRARY_PATH", lib.to_str().unwrap())]);
    assert_refused(&out, &report, "the driver supports CUDA 12.2");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_stage_lands_in_the_report() {
    let dir = scratch("stages");
    let bundle = bundle(&dir);
    let smi = fake_nvidia_smi(&dir, "12.4");
    write(&dir.join("lib/libcuda.so.1"), "");
    let lib = dir.join("lib");
    let (out, report) = run(&dir, &bundle, &[("NVIDIA_SMI", smi.to_str().unwrap()), ("LD_LIBRARY_PATH", lib.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(1), "stages failed, so the check fails: {report}");
    assert!(report["error"].is_null(), "{report}");
    assert_eq!(report["gpu"]["driver_cuda"], "12.4", "{report}");
    let stages = report["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 16, "{report}");
    let first = &stages[0];
    assert_eq!(first["name"], "golden songunet_small cuda");
    assert_eq!(first["status"], "failed");
    assert!(first["log_tail"].as_str().unwrap().contains("this build has no CUDA"), "{first}");
    assert_eq!(first["peak_memory_mib"], 1234, "the memory sampler's figure: {first}");
    for stage in stages {
        let status = stage["status"].as_str().unwrap();
        assert!(["ok", "failed", "timeout", "skipped: out of time"].contains(&status), "{stage}");
        assert!(stage["name"].as_str().unwrap().contains("wgpu") || status != "ok", "a CUDA stage passed without CUDA: {stage}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
