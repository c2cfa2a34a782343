//! The image trainer end to end on a small synthetic IDX dataset: files of a run, resume that
//! continues exactly, refusals that protect a run, and `imm sample` to PNG and .npz.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use imm::io::safetensors::Tensors;

mod common;
use common::{scratch_with_data, weights};

fn imm(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imm")).args(args).current_dir(dir).output().expect("run imm")
}

fn ok(args: &[&str], dir: &Path) -> String {
    let out = imm(args, dir);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{args:?} failed:\n{text}");
    text
}

fn fails(args: &[&str], dir: &Path, expected: &str) {
    let out = imm(args, dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} should fail");
    assert!(stderr.contains(expected), "{args:?}: stderr lacks '{expected}':\n{stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked:\n{stderr}");
}

fn train_args<'a>(out: &'a str, kimg: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train", "--preset", "mnist-tiny", "--data-dir", "data", "--out", out, "--kimg", kimg, "--batch", "16",
        "--eval-steps", "1,2", "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_run_saves_resumes_exactly_and_samples() {
    let dir = scratch_with_data("run");
    // Straight through: 64 images.
    ok(&train_args("straight", "0.064", &[]), &dir);
    // Interrupted: 32 images, then resumed to 64.
    ok(&train_args("split", "0.032", &[]), &dir);
    fails(&train_args("split", "0.064", &[]), &dir, "pass --resume");
    fails(&train_args("split", "0.064", &["--resume", "--seed", "5"]), &dir, "different train");
    let resumed = ok(&train_args("split", "0.064", &["--resume"]), &dir);
    assert!(resumed.contains("Resuming") && resumed.contains("at 32 images"), "{resumed}");

    for file in ["config.json", "metrics.jsonl", "samples.png", "samples/000000000064.png"] {
        assert!(dir.join("split").join(file).is_file(), "{file} missing");
    }
    let records = std::fs::read_to_string(dir.join("split/metrics.jsonl")).unwrap();
    assert!(records.lines().count() >= 2, "metrics of both stretches are kept:\n{records}");
    let states: Vec<_> = std::fs::read_dir(dir.join("split/checkpoints")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(states.len(), 2, "the two newest states: {states:?}");

    let a = weights(&dir.join("straight/snapshots/ema-000000000064.safetensors"));
    let b = weights(&dir.join("split/snapshots/ema-000000000064.safetensors"));
    let init = weights(&dir.join("split/snapshots/ema-000000000032.safetensors"));
    let diff = |x: &[f32], y: &[f32]| x.iter().zip(y).fold(0f32, |m, (p, q)| m.max((p - q).abs()));
    assert!(diff(&a, &init) > 1e-4, "training moved the weights");
    assert!(diff(&a, &b) < 1e-5, "resumed run differs from the straight one by {}", diff(&a, &b));

    let snapshot = dir.join("split/snapshots/ema-000000000064.safetensors");
    let snapshot = snapshot.to_str().unwrap();
    ok(&["sample", "--weights", snapshot, "--steps", "2", "--n", "12", "--out", "grid.png", "--device", "cpu"], &dir);
    let png = std::fs::read(dir.join("grid.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    ok(&["sample", "--weights", snapshot, "--steps", "1", "--n", "5", "--out", "s.npz", "--device", "cpu"], &dir);
    let npz = std::fs::read(dir.join("s.npz")).unwrap();
    assert!(npz.starts_with(b"PK\x03\x04") && npz.ends_with(&[0, 0]), "a zip archive");
    let npy = npz.windows(6).position(|w| w == b"\x93NUMPY").expect("an .npy inside");
    let header_len = u16::from_le_bytes([npz[npy + 8], npz[npy + 9]]) as usize;
    let header = String::from_utf8_lossy(&npz[npy + 10..npy + 10 + header_len]);
    assert!(header.contains("'shape': (5, 28, 28, 1)") && header.contains("'|u1'"), "{header}");
    assert_eq!((10 + header_len) % 64, 0, "the .npy header pads the data to 64 bytes");
    let data_end = npy + 10 + header_len + 5 * 28 * 28;
    assert_eq!(&npz[data_end..data_end + 4], b"PK\x01\x02", "the central directory follows the pixels");

    evaluate(&dir, snapshot);

    // Data-parallel over two (CPU) devices: the run goes through and records it.
    ok(&train_args("parallel", "0.032", &["--devices", "2"]), &dir);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("parallel/config.json")).unwrap()).unwrap();
    assert_eq!(config["devices"], 2);
    fails(&train_args("parallel3", "0.032", &["--devices", "3"]), &dir, "3 devices");
    // The same f32 weights may continue in another precision; the snapshot's card says which.
    let resumed = ok(&train_args("parallel", "0.048", &["--resume", "--precision", "bf16"]), &dir);
    assert!(resumed.contains("at 32 images"), "{resumed}");
    let card = Tensors::read(&dir.join("parallel/snapshots/ema-000000000048.safetensors")).unwrap().metadata["imm"].clone();
    let card: serde_json::Value = serde_json::from_str(&card).unwrap();
    assert_eq!(card["net"]["precision"], "bf16");
    fails(&["train", "--preset", "moons", "--precision", "f16"], &dir, "--precision apply to image presets only");
    // The paper's FP16 recipe, flag by flag, lands in the run's configuration.
    ok(&train_args("fp16", "0.016", &["--precision", "f16", "--a", "2", "--time-input", "stride", "--min-gap", "1e-4"]), &dir);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("fp16/config.json")).unwrap()).unwrap();
    let imm = &config["method_config"];
    assert_eq!((&config["net"]["precision"], &imm["a"], &imm["precond"]["time_input"]), (&"f16".into(), &2.0.into(), &"stride".into()));
    assert_eq!(imm["times"]["min_gap"], 1e-4);

    std::fs::write(dir.join("bad.safetensors"), b"not weights").unwrap();
    fails(&["sample", "--weights", "bad.safetensors", "--device", "cpu"], &dir, "not a valid safetensors file");
    fails(&["sample", "--weights", snapshot, "--steps", "0", "--device", "cpu"], &dir, "positive integer");
    let mut foreign = Tensors::read(Path::new(snapshot)).unwrap();
    foreign.metadata.clear();
    std::fs::write(dir.join("foreign.safetensors"), foreign.to_bytes()).unwrap();
    fails(&["sample", "--weights", "foreign.safetensors", "--device", "cpu"], &dir, "pass --preset");
    fails(&["sample", "--weights", "foreign.safetensors", "--preset", "fmnist-small", "--device", "cpu"], &dir, "does not fit");
    ok(&["sample", "--weights", "foreign.safetensors", "--preset", "mnist-tiny", "--n", "3", "--device", "cpu"], &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Every method trains on images and its card samples with `imm sample`; what a method cannot do
/// (a shortcut model's 3 steps, a consistency model's pushforward steps) is refused with the reason.
#[test]
fn every_method_trains_images_and_samples_from_its_card() {
    let dir = scratch_with_data("methods");
    for method in ["fm", "meanflow", "ct", "shortcut"] {
        ok(&train_args(method, "0.032", &["--method", method]), &dir);
        let snapshot = format!("{method}/snapshots/ema-000000000032.safetensors");
        let card: serde_json::Value = serde_json::from_str(&Tensors::read(&dir.join(&snapshot)).unwrap().metadata["imm"]).unwrap();
        assert_eq!(card["method"], method, "the card names the method");
        let out = format!("{method}.png");
        ok(&["sample", "--weights", &snapshot, "--steps", "2", "--n", "4", "--out", &out, "--device", "cpu"], &dir);
        assert!(std::fs::read(dir.join(&out)).unwrap().starts_with(b"\x89PNG"), "{method} sampled a grid");
    }
    let sample = |method: &str, extra: &[&str], expected: &str| {
        let snapshot = format!("{method}/snapshots/ema-000000000032.safetensors");
        let mut args = vec!["sample", "--weights", snapshot.as_str(), "--n", "2", "--device", "cpu"];
        args.extend_from_slice(extra);
        fails(&args, &dir, expected);
    };
    sample("shortcut", &["--steps", "3"], "1, 2, 4, ... or 128 steps");
    sample("ct", &["--sampler", "pushforward"], "(restart) only");
    sample("meanflow", &["--sampler", "heun"], "MeanFlow samples with its own uniform steps");
    std::fs::remove_dir_all(&dir).unwrap();
}

fn with_preset<'a>(mut args: Vec<&'a str>, preset: &'a str) -> Vec<&'a str> {
    args[2] = preset;
    args
}

/// Trains `preset` for 48 images straight through, and for 32 then resumed to 48: both end with
/// the same weights, and training moved them.
fn straight_and_resumed(dir: &Path, preset: &str) {
    ok(&with_preset(train_args("straight", "0.048", &[]), preset), dir);
    ok(&with_preset(train_args("split", "0.032", &[]), preset), dir);
    let resumed = ok(&with_preset(train_args("split", "0.048", &["--resume"]), preset), dir);
    assert!(resumed.contains("at 32 images"), "{resumed}");
    let a = weights(&dir.join("straight/snapshots/ema-000000000048.safetensors"));
    let b = weights(&dir.join("split/snapshots/ema-000000000048.safetensors"));
    let init = weights(&dir.join("split/snapshots/ema-000000000032.safetensors"));
    assert!(a.iter().zip(&init).any(|(p, q)| (p - q).abs() > 1e-6), "{preset}: training moved the weights");
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() < 1e-5), "{preset}: a resumed run continues exactly");
}

/// A conditional preset end to end: labels from the data's label file, exact resume, samples by
/// class with guidance, class accuracy in `imm eval`, and refusals of what does not fit.
#[test]
fn a_conditional_run_samples_classes_with_guidance() {
    let dir = scratch_with_data("cond");
    straight_and_resumed(&dir, "mnist-cond-tiny");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("straight/config.json")).unwrap()).unwrap();
    assert_eq!((&config["net"]["label_dim"], &config["label_dropout"]), (&10.into(), &0.1.into()));

    let snapshot = "straight/snapshots/ema-000000000048.safetensors";
    let npz = |name: &str, extra: &[&str]| -> Vec<u8> {
        let mut args = vec!["sample", "--weights", snapshot, "--steps", "2", "--n", "4", "--out", name, "--device", "cpu"];
        args.extend_from_slice(extra);
        ok(&args, &dir);
        std::fs::read(dir.join(name)).unwrap()
    };
    let three = npz("3.npz", &["--class", "3"]);
    assert_eq!(three, npz("3again.npz", &["--class", "3", "--cfg", "1"]), "guidance 1 is no guidance");
    assert_ne!(three, npz("4.npz", &["--class", "4"]), "the class changes the samples");
    assert_ne!(three, npz("3g.npz", &["--class", "3", "--cfg", "2"]), "guidance changes the samples");
    ok(&["sample", "--weights", snapshot, "--n", "20", "--class", "all", "--cfg", "1.5", "--out", "all.png", "--device", "cpu"], &dir);
    fails(&["sample", "--weights", snapshot, "--class", "Sneaker", "--device", "cpu"], &dir, "unknown class 'Sneaker'");
    fails(&["sample", "--weights", snapshot, "--class", "10", "--device", "cpu"], &dir, "from 0 to 9");
    fails(&["sample", "--weights", snapshot, "--cfg", "-1", "--device", "cpu"], &dir, "guidance scale");

    let classifier = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/classifier-mnist.safetensors");
    let args = ["eval", "--weights", snapshot, "--steps", "1", "--n", "20", "--data-dir", "data", "--cfg", "1.5", "--json", "e.json"];
    let out = Command::new(env!("CARGO_BIN_EXE_imm"))
        .args(args)
        .args(["--classifier", classifier.to_str().unwrap(), "--device", "cpu"])
        .current_dir(&dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("class accuracy"));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("e.json")).unwrap()).unwrap();
    let accuracy = report["rows"][0]["class_accuracy"].as_f64().expect("a class accuracy");
    assert!((0.0..=1.0).contains(&accuracy) && (accuracy * 20.0).fract() == 0.0, "{accuracy}");

    // An unconditional model takes neither a class nor guidance.
    ok(&train_args("plain", "0.016", &[]), &dir);
    let plain = "plain/snapshots/ema-000000000016.safetensors";
    fails(&["sample", "--weights", plain, "--class", "3", "--device", "cpu"], &dir, "has no class labels");
    fails(&["sample", "--weights", plain, "--cfg", "1.5", "--device", "cpu"], &dir, "needs class labels");
    // Weights without a card, read with a preset whose label table does not match.
    let mut bare = Tensors::read(&dir.join(snapshot)).unwrap();
    bare.metadata.clear();
    std::fs::write(dir.join("bare.safetensors"), bare.to_bytes()).unwrap();
    fails(&["sample", "--weights", "bare.safetensors", "--preset", "mnist-tiny", "--device", "cpu"], &dir, "map_label");
    ok(&["sample", "--weights", "bare.safetensors", "--preset", "mnist-cond-tiny", "--class", "7", "--n", "2", "--device", "cpu"], &dir);
    // One class per group of particles: the config records it, a resume must keep it, and an
    // unconditional preset has no labels to group.
    ok(&with_preset(train_args("grouped", "0.016", &["--labels", "group"]), "mnist-cond-tiny"), &dir);
    let grouped: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("grouped/config.json")).unwrap()).unwrap();
    assert_eq!(grouped["labels"], "group");
    fails(&with_preset(train_args("grouped", "0.032", &["--resume"]), "mnist-cond-tiny"), &dir, "different labels");
    ok(&with_preset(train_args("grouped", "0.032", &["--resume", "--labels", "group"]), "mnist-cond-tiny"), &dir);
    fails(&train_args("plain-grouped", "0.016", &["--labels", "group"]), &dir, "mnist-tiny is unconditional");
    // Without the label file the conditional preset cannot train.
    std::fs::remove_file(dir.join("data/train-labels-idx1-ubyte")).unwrap();
    fails(&with_preset(train_args("nolabels", "0.016", &[]), "mnist-cond-tiny"), &dir, "no mnist training labels");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Users' own images: a folder of PNG and JPEG files in one sub-folder per class trains a
/// conditional preset with those classes, whose names `imm sample --class` then takes.
#[test]
fn an_image_folder_trains_with_its_own_classes() {
    let dir = scratch_with_data("folder");
    for (class, bright) in [("circles", 220u8), ("squares", 40u8)] {
        std::fs::create_dir_all(dir.join("mine").join(class)).unwrap();
        for i in 0..6u32 {
            let img = image::RgbImage::from_fn(40, 32, |x, y| image::Rgb([bright, (x * 6) as u8, ((y + i) * 7) as u8]));
            let ext = if i % 2 == 0 { "png" } else { "jpg" };
            img.save(dir.join("mine").join(class).join(format!("{i}.{ext}"))).unwrap();
        }
    }
    let args = with_preset(train_args("own", "0.032", &["--image-folder", "mine"]), "mnist-cond-tiny");
    let out = ok(&args, &dir);
    assert!(out.contains("Read 12 images of 2 classes"), "{out}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("own/config.json")).unwrap()).unwrap();
    assert_eq!((&config["classes"], &config["net"]["label_dim"]), (&serde_json::json!(["circles", "squares"]), &2.into()));
    let snapshot = "own/snapshots/ema-000000000032.safetensors";
    ok(&["sample", "--weights", snapshot, "--class", "squares", "--cfg", "2", "--n", "3", "--out", "sq.png", "--device", "cpu"], &dir);
    fails(&["sample", "--weights", snapshot, "--class", "triangles", "--device", "cpu"], &dir, "circles, squares");
    fails(&["eval", "--weights", snapshot, "--device", "cpu"], &dir, "was trained on an image folder: pass --ref");
    let out = Command::new(env!("CARGO_BIN_EXE_imm"))
        .args(["eval", "--weights", snapshot, "--ref", "mine", "--steps", "1", "--n", "4", "--device", "cpu"])
        .current_dir(&dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("IMM_INCEPTION", imm::evaluation::inception::default_weights())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains("fid-inception: 4 samples against 12 images in mine"), "{said}{}", String::from_utf8_lossy(&out.stderr));
    // An unconditional preset takes the images and ignores the classes.
    ok(&train_args("plain", "0.016", &["--image-folder", "mine"]), &dir);
    std::fs::create_dir_all(dir.join("empty/nothing")).unwrap();
    fails(&train_args("none", "0.016", &["--image-folder", "empty"]), &dir, "no PNG or JPEG images");
    std::fs::write(dir.join("mine/squares/9.png"), b"not a png").unwrap();
    fails(&train_args("bad", "0.016", &["--image-folder", "mine"]), &dir, "cannot read the image");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The DiT path end to end: `mnist-dit` trains, resumes exactly, samples a class with guidance,
/// and trains and samples in f16.
#[test]
fn a_dit_run_resumes_exactly_and_samples_a_class() {
    let dir = scratch_with_data("dit");
    straight_and_resumed(&dir, "mnist-dit");
    let card = Tensors::read(&dir.join("straight/snapshots/ema-000000000048.safetensors")).unwrap().metadata["imm"].clone();
    assert!(card.contains(r#""network":"dit""#), "{card}");
    let snapshot = "straight/snapshots/ema-000000000048.safetensors";
    ok(&["sample", "--weights", snapshot, "--class", "2", "--cfg", "1.5", "--n", "4", "--out", "two.png", "--device", "cpu"], &dir);
    assert!(std::fs::read(dir.join("two.png")).unwrap().starts_with(b"\x89PNG"));
    // The FP16 recipe's precision: the card says so and its samples are drawn in f16.
    ok(&with_preset(train_args("half", "0.016", &["--precision", "f16"]), "mnist-dit"), &dir);
    let card = Tensors::read(&dir.join("half/snapshots/ema-000000000016.safetensors")).unwrap().metadata["imm"].clone();
    assert!(card.contains(r#""precision":"f16""#), "{card}");
    ok(&["sample", "--weights", "half/snapshots/ema-000000000016.safetensors", "--class", "1", "--n", "2", "--out", "half.png", "--device", "cpu"], &dir);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `imm eval` on a snapshot: a report per step count, reference statistics computed once into the
/// cache and reused with the same result, Inception features too, and refusals that say why.
fn evaluate(dir: &Path, snapshot: &str) {
    let classifier = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/classifier-mnist.safetensors");
    let classifier = classifier.to_str().unwrap();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--weights", snapshot, "--steps", "1,2", "--n", "24", "--data-dir", "data", "--device", "cpu"];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_imm")).args(&args).current_dir(dir)
            .env("XDG_CACHE_HOME", dir.join("cache"))
            .env("IMM_INCEPTION", imm::evaluation::inception::default_weights())
            .output()
            .unwrap()
    };
    let report = |name: &str| -> Vec<f64> {
        let json: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap();
        json["rows"].as_array().unwrap().iter().map(|r| r["value"].as_f64().unwrap()).collect()
    };
    for (json, extra) in [("a.json", "classifier"), ("b.json", "classifier"), ("c.json", "inception")] {
        let out = eval(&["--metric", extra, "--classifier", classifier, "--json", json]);
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("samples against 64 mnist training images"), "{text}");
        let fids = report(json);
        assert!(fids.len() == 2 && fids.iter().all(|f| f.is_finite() && *f > 0.0), "{json}: {fids:?}");
    }
    assert_eq!(report("a.json"), report("b.json"), "the cached reference gives the same FIDs");
    let cached = std::fs::read_dir(dir.join("cache/imm/fid-stats")).unwrap().count();
    assert_eq!(cached, 2, "one statistics file per feature extractor");
    let fashion = Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models/classifier-fashion-mnist.safetensors");
    let out = eval(&["--classifier", fashion.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("was trained on fashion-mnist, the model on mnist"));
    let out = eval(&["--steps", "0"]);
    assert!(!out.status.success());
}

#[test]
fn missing_data_names_where_to_get_it() {
    let dir = scratch_with_data("missing");
    fails(&["train", "--preset", "cifar10-paper", "--data-dir", "nowhere", "--device", "cpu"], &dir, "cifar-10-binary.tar.gz");
    fails(&["train", "--preset", "moons", "--resume"], &dir, "image presets only");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Paths under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        }
        out.push(path);
    }
    out
}

/// Every file of a run reads back whole: no `.partial` left, every safetensors file parses, every
/// JSON file and metrics line is JSON, every PNG ends with its IEND chunk.
fn assert_whole(run: &Path) {
    for path in files_under(run) {
        let name = path.display().to_string();
        assert!(!name.ends_with(".partial"), "left behind: {name}");
        if path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => assert!(Tensors::parse(&bytes, &name).is_ok(), "{name} is damaged"),
            Some("json") => assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(), "{name} is damaged"),
            Some("jsonl") => {
                for line in String::from_utf8(bytes).unwrap().lines() {
                    assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "{name}: {line}");
                }
            }
            Some("png") => assert!(bytes.ends_with(&[0xae, 0x42, 0x60, 0x82]), "{name} is cut short"),
            _ => {}
        }
    }
}

/// (nimg, loss) of each metrics record: what must not depend on interruptions.
fn losses(run: &Path) -> Vec<(u64, String)> {
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .map(|r| (r["nimg"].as_u64().unwrap(), r["loss"].to_string()))
        .collect()
}

/// Any `.partial` file or directory under `run`: a write in progress.
fn writing(run: &Path) -> bool {
    files_under(run).iter().any(|p| p.to_string_lossy().ends_with(".partial"))
}

/// Sends `signal` to `child` and, for SIGSTOP, waits until it has stopped.
fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    while signal == libc::SIGSTOP {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('T')) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}

/// A run killed with SIGKILL at random moments, and in the middle of writes (stopped as soon as
/// a temporary file shows, and killed if it is still there), and resumed each time, ends with
/// exactly the weights and the metrics of a run that was never interrupted, every file whole.
#[test]
fn a_run_killed_at_random_moments_ends_as_an_uninterrupted_one() {
    let dir = scratch_with_data("killed");
    let args = |out: &'static str| train_args(out, "0.192", &["--snapshot-kimg", "0.032"]);
    let start = std::time::Instant::now();
    ok(&args("straight"), &dir);
    let straight = start.elapsed();
    let run = dir.join("killed");
    // The newest whole checkpoint's share of the 192 images.
    let progress = || {
        let done = files_under(&run.join("checkpoints")).iter().filter(|p| p.is_dir() && !p.to_string_lossy().ends_with(".partial"))
            .filter_map(|p| p.file_name()?.to_str()?.strip_prefix("state-")?.parse::<u64>().ok()).max().unwrap_or(0);
        done as f64 / 192.0
    };
    let mut rng = imm::Rng::new(11);
    let (mut kills, mut during_writes) = (0, 0);
    loop {
        let mut command = args("killed");
        if files_under(&run.join("checkpoints")).iter().any(|p| p.is_dir() && !p.to_string_lossy().ends_with(".partial")) {
            command.push("--resume");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_imm"))
            .args(&command)
            .current_dir(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        // Alternately a random moment and the next write; after ten kills the run may finish. The
        // moment falls within what is left of the work, whatever this machine's speed, so that it
        // comes before the end.
        let left = straight.mul_f64((1.0 - progress()) * (0.1 + 0.6 * rng.below(1000) as f64 / 1000.0));
        let (at_a_write, deadline) = (kills % 2 == 1, left);
        let killed = loop {
            if kills >= 10 || child.try_wait().unwrap().is_some() {
                break false;
            }
            if !at_a_write && start.elapsed() > deadline {
                break true;
            }
            if at_a_write && writing(&run) {
                signal(&child, libc::SIGSTOP);
                if writing(&run) {
                    during_writes += 1;
                    break true;
                }
                signal(&child, libc::SIGCONT);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        if killed {
            child.kill().unwrap();
            child.wait().unwrap();
            kills += 1;
            continue;
        }
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        assert!(status.success(), "the run failed after {kills} kills: {stderr}");
        break;
    }
    println!("{kills} kills, {during_writes} in the middle of a write");
    assert!(kills >= 4, "the run was interrupted several times ({kills})");
    assert!(during_writes >= 1, "at least one kill hit a write in progress");

    assert_whole(&run);
    let diff = |file: &str| {
        let (a, b) = (weights(&run.join(file)), weights(&dir.join("straight").join(file)));
        assert_eq!(a.len(), b.len());
        a.iter().zip(&b).fold(0f32, |m, (p, q)| m.max((p - q).abs()))
    };
    for file in ["snapshots/ema-000000000192.safetensors", "checkpoints/state-000000000192/net.safetensors"] {
        let diff = diff(file);
        assert_eq!(diff, 0.0, "{file} differs from the uninterrupted run's");
    }
    assert_eq!(losses(&run), losses(&dir.join("straight")), "the same metrics records");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A learning rate far too high makes the loss non-finite: the steps are skipped and counted,
/// the run stops with a message, the last good state stays the newest and finite, and `--resume`
/// with a sane learning rate continues from it.
#[test]
fn non_finite_numbers_stop_the_run_without_saving_them() {
    let dir = scratch_with_data("nan");
    ok(&train_args("run", "0.032", &[]), &dir);
    let good = weights(&dir.join("run/checkpoints/state-000000000032/net.safetensors"));
    let out = imm(&train_args("run", "0.4", &["--resume", "--lr", "1e5"]), &dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run stops");
    assert!(stderr.contains("not finite in 5 steps in a row") && stderr.contains("continue from it with --resume"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let records = std::fs::read_to_string(dir.join("run/metrics.jsonl")).unwrap();
    let skipped: u64 = records.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["skipped"].as_u64().unwrap_or(0)).sum();
    assert!(skipped >= 5, "the skipped steps are in the metrics:\n{records}");
    for path in files_under(&dir.join("run")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "safetensors")) {
        assert!(weights(&path).iter().all(|v| v.is_finite()), "{} holds non-finite weights", path.display());
    }
    assert_whole(&dir.join("run"));
    let resumed = ok(&train_args("run", "0.064", &["--resume"]), &dir);
    assert!(resumed.contains("at 32 images"), "{resumed}");
    let after = weights(&dir.join("run/checkpoints/state-000000000064/net.safetensors"));
    assert!(after.iter().all(|v| v.is_finite()) && after != good, "training went on from the good state");
    assert_eq!(losses(&dir.join("run")).iter().map(|(n, _)| *n).collect::<Vec<_>>(), [32, 64], "the failed session's records are gone");
    std::fs::remove_dir_all(&dir).unwrap();
}
