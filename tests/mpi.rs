//! Training across processes under `mpirun` (Open MPI), on the CPU: the same weights and metrics
//! as one process accumulating the same parts, a killed rank that stops the run with its newest
//! state intact, an error on any rank that ends the job with its message, and ranks started with
//! different options refused.
#![cfg(feature = "mpi")]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{scratch_with_data, weights};
use imm::io::safetensors::Tensors;

/// `mpirun` with its ranks on this machine, whatever the core count, and as root where the
/// tests run as root; `programs` are the commands of each group of ranks (MPMD: `a : b`).
fn mpirun(programs: &[(usize, Vec<&str>)], dir: &Path) -> Command {
    let programs: Vec<_> = programs.iter().map(|(np, args)| (*np, dir, args.clone())).collect();
    mpirun_in(&programs, dir)
}

/// [`mpirun`] with each group of ranks in a working directory of its own.
fn mpirun_in(programs: &[(usize, &Path, Vec<&str>)], dir: &Path) -> Command {
    let mut command = Command::new("mpirun");
    command
        .current_dir(dir)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Containers often forbid the cross-process memory attach of the shared-memory transport.
        .env("OMPI_MCA_btl_vader_single_copy_mechanism", "none")
        // Each rank gets every core, as the one process it is compared with: bound to one core, a
        // rank's CPU kernels would split their sums over fewer threads, in another order.
        .args(["--oversubscribe", "--bind-to", "none"]);
    for (i, (np, wdir, args)) in programs.iter().enumerate() {
        if i > 0 {
            command.arg(":");
        }
        command.args(["-np", &np.to_string(), "-wdir"]).arg(wdir).arg(env!("CARGO_BIN_EXE_imm")).args(args);
    }
    command
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn ok(mut command: Command) -> String {
    let out = command.output().expect("run");
    assert!(out.status.success(), "{command:?} failed:\n{}", text(&out));
    text(&out)
}

fn train<'a>(out: &'a str, kimg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--preset", "mnist-tiny", "--data-dir", "data", "--out", out, "--kimg", kimg, "--batch", "16", "--eval-steps", "1", "--device", "cpu"];
    args.extend_from_slice(extra);
    args
}

fn imm(args: &[&str], dir: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_imm"));
    command.args(args).current_dir(dir);
    command
}

/// The largest difference over the largest magnitude.
fn relative(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs())) / scale.max(1e-30)
}

/// The metrics records without their timing: (nimg, loss, skipped).
fn records(run: &Path) -> Vec<(u64, f64, u64)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["nimg"].as_u64().unwrap(), r["loss"].as_f64().unwrap(), r["skipped"].as_u64().unwrap()))
        .collect()
}

/// Two runs hold the same weights and EMA at `nimg` images, every tensor within 1e-6 of its
/// largest value, and the same metrics records.
fn assert_same_run(a: &Path, b: &Path, nimg: u64) {
    for file in [format!("checkpoints/state-{nimg:012}/net.safetensors"), format!("snapshots/ema-{nimg:012}.safetensors")] {
        let (x, y) = (Tensors::read(&a.join(&file)).unwrap(), Tensors::read(&b.join(&file)).unwrap());
        assert_eq!(x.tensors.len(), y.tensors.len());
        for (name, t) in &x.tensors {
            let d = relative(&t.values, &y.tensors[name].values);
            assert!(d <= 1e-6, "{file}: {name} of {} and {} differ by {d:e} of its largest value", a.display(), b.display());
        }
    }
    let (x, y) = (records(a), records(b));
    assert_eq!(x.len(), y.len(), "{x:?} vs {y:?}");
    for ((n1, l1, s1), (n2, l2, s2)) in x.iter().zip(&y) {
        assert!(n1 == n2 && s1 == s2 && (l1 - l2).abs() <= 1e-6 * l1.abs(), "{x:?} vs {y:?}");
    }
}

/// Two ranks train what one process accumulating two parts trains; two ranks of two devices each,
/// what two ranks accumulating two parts each train (the gradients are added in the same order:
/// each rank's two, then the ranks'). One process accumulating four parts adds them in another
/// order: it agrees to rounding only (which Adam can raise to 1e-4 of a tensor in two steps), as
/// the docs say. Only rank 0 writes.
#[test]
fn ranks_train_what_one_process_accumulating_their_parts_trains() {
    let dir = scratch_with_data("mpi-equal");
    let fresh = weights(&{
        ok(imm(&train("init", "0.016", &[]), &dir));
        dir.join("init/snapshots/ema-000000000016.safetensors")
    });
    let said = ok(mpirun(&[(2, train("ranks", "0.064", &["--snapshot-kimg", "0.032"]))], &dir));
    assert_eq!(said.matches("Training imm").count(), 1, "rank 0 alone prints:\n{said}");
    ok(imm(&train("accumulated", "0.064", &["--snapshot-kimg", "0.032", "--accumulate", "2"]), &dir));
    assert_same_run(&dir.join("ranks"), &dir.join("accumulated"), 64);
    let trained = weights(&dir.join("ranks/snapshots/ema-000000000064.safetensors"));
    assert!(relative(&trained, &fresh) > 1e-4, "training moved the weights");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("ranks/config.json")).unwrap()).unwrap();
    assert_eq!(config["ranks"], 2);

    ok(mpirun(&[(2, train("ranks-devices", "0.032", &["--devices", "2"]))], &dir));
    ok(mpirun(&[(2, train("ranks-accumulated", "0.032", &["--accumulate", "2"]))], &dir));
    assert_same_run(&dir.join("ranks-devices"), &dir.join("ranks-accumulated"), 32);
    ok(imm(&train("accumulated4", "0.032", &["--accumulate", "4"]), &dir));
    let four = |run: &str| weights(&dir.join(run).join("snapshots/ema-000000000032.safetensors"));
    assert!(relative(&four("ranks-devices"), &four("accumulated4")) <= 1e-5, "the same parts, summed in another order");
    // Not the same parts: one process on the whole batch draws from another stream.
    ok(imm(&train("whole", "0.032", &[]), &dir));
    let whole = weights(&dir.join("whole/snapshots/ema-000000000032.safetensors"));
    assert!(relative(&whole, &weights(&dir.join("accumulated4/snapshots/ema-000000000032.safetensors"))) > 1e-6);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The pids of `mpirun`'s ranks, found by their environment; empty until they have started.
fn rank_pids(mpirun: &Child) -> Vec<(usize, i32)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let parent = status.lines().find_map(|l| l.strip_prefix("PPid:")).and_then(|p| p.trim().parse::<u32>().ok());
        if parent != Some(mpirun.id()) {
            continue;
        }
        let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
        let rank = environ.split(|&b| b == 0).find_map(|v| std::str::from_utf8(v.strip_prefix(b"OMPI_COMM_WORLD_RANK=")?).ok()?.parse().ok());
        if let Some(rank) = rank {
            found.push((rank, pid));
        }
    }
    found
}

/// A rank killed mid-run stops the others with a non-zero exit and a message within a minute; the
/// newest state is intact, and the run continues from it on one rank, then on two.
#[test]
fn a_killed_rank_stops_the_run_and_it_resumes_on_any_rank_count() {
    let dir = scratch_with_data("mpi-killed");
    let mut child = mpirun(&[(2, train("run", "50", &["--snapshot-kimg", "0.032"]))], &dir).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let states = dir.join("run/checkpoints");
    let start = Instant::now();
    while !std::fs::read_dir(&states).into_iter().flatten().flatten().any(|e| !e.file_name().to_string_lossy().ends_with(".partial")) {
        assert!(child.try_wait().unwrap().is_none(), "the run ended before its first state");
        assert!(start.elapsed() < Duration::from_secs(300), "no state after 5 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pids = rank_pids(&child);
    let (_, victim) = *pids.iter().find(|(rank, _)| *rank == 1).unwrap_or_else(|| panic!("rank 1 among {pids:?}"));
    unsafe { libc::kill(victim, libc::SIGKILL) };
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "the other rank still runs a minute after the kill");
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = child.wait_with_output().unwrap();
    let said = text(&out);
    assert!(!status.success(), "a run that lost a rank exited with success:\n{said}");
    assert!(said.contains("rank 1") && said.contains("signal 9"), "no message names the lost rank:\n{said}");

    let (nimg, newest) = std::fs::read_dir(&states)
        .unwrap()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_string_lossy().strip_prefix("state-")?.parse::<u64>().ok()?, e.path())))
        .max()
        .expect("a state");
    for file in ["net.safetensors", "ema.safetensors", "optimizer.bpk", "progress.json"] {
        assert!(std::fs::metadata(newest.join(file)).is_ok_and(|m| m.len() > 0), "{file} of {} missing", newest.display());
    }
    let one_more = format!("{}", (nimg + 16) as f64 / 1000.0);
    let resumed = ok(imm(&train("run", &one_more, &["--resume"]), &dir));
    assert!(resumed.contains(&format!("at {nimg} images")), "{resumed}");
    let two_more = format!("{}", (nimg + 48) as f64 / 1000.0);
    let resumed = ok(mpirun(&[(2, train("run", &two_more, &["--resume"]))], &dir));
    assert!(resumed.contains(&format!("at {} images", nimg + 16)), "{resumed}");
    assert!(dir.join(format!("run/snapshots/ema-{:012}.safetensors", nimg + 48)).is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An error on one rank ends every rank within a minute, with a non-zero exit and the error tagged
/// with its rank: without data on any rank (rank 0 fails while rank 1 waits for it to read), and
/// on rank 1 alone (its working directory has no data; rank 0 waits for it in the next call).
#[test]
fn an_error_on_any_rank_ends_the_job_with_its_message() {
    let dir = scratch_with_data("mpi-error");
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let args = train("run", "0.064", &[]);
    for (failing, programs) in [(0, vec![(2, empty.as_path(), args.clone())]), (1, vec![(1, dir.as_path(), args.clone()), (1, empty.as_path(), args.clone())])] {
        let mut child = mpirun_in(&programs, &dir).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(60) {
                for (_, pid) in rank_pids(&child) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                child.kill().unwrap();
                panic!("rank {failing} failed, and the job still ran a minute later");
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let said = text(&child.wait_with_output().unwrap());
        assert!(!status.success(), "a job with a failed rank exited with success:\n{said}");
        assert!(said.contains(&format!("error (rank {failing} of 2): no mnist training images")), "no message from rank {failing}:\n{said}");
        assert!(!said.contains("panicked"), "{said}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ranks started with a different batch or preset are refused before anything is written.
#[test]
fn ranks_with_different_options_are_refused() {
    let dir = scratch_with_data("mpi-mismatch");
    let with = |index: usize, value: &'static str| {
        let mut args = train("run", "0.032", &[]);
        args[index] = value;
        args
    };
    assert_eq!(train("run", "0.032", &[])[10], "16");
    for other in [with(10, "32"), with(2, "mnist-cond-tiny")] {
        let out = mpirun(&[(1, train("run", "0.032", &[])), (1, other)], &dir).output().unwrap();
        let said = text(&out);
        assert!(!out.status.success(), "mismatched ranks trained:\n{said}");
        assert!(said.contains("rank 1 started with options different from rank 0's"), "{said}");
        assert!(!said.contains("panicked"), "{said}");
        assert!(!dir.join("run/metrics.jsonl").exists(), "a refused run wrote its files");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `bench allreduce` runs under mpirun and reports a bandwidth per preset; alone, it refuses.
#[test]
fn bench_allreduce_reports_bandwidths() {
    let dir = scratch_with_data("mpi-bench");
    let args = vec!["bench", "allreduce", "--presets", "mnist-tiny", "--iters", "2", "--json", "allreduce.json"];
    let said = ok(mpirun(&[(2, args.clone())], &dir));
    assert_eq!(said.matches("mnist-tiny").count(), 1, "rank 0 alone prints:\n{said}");
    let figures: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("allreduce.json")).unwrap()).unwrap();
    let row = &figures["rows"][0];
    assert_eq!(figures["ranks"], 2);
    assert!(row["parameters"].as_u64().unwrap() > 100_000 && row["alg_gb_per_s"].as_f64().unwrap() > 0.0, "{figures}");
    let out = imm(&args, &dir).output().unwrap();
    assert!(!out.status.success() && text(&out).contains("run it under mpirun"), "{}", text(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}
