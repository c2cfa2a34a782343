//! The latent pipeline on a small synthetic image folder with the tiny VAE of the golden file:
//! `imm encode` writes shards of posteriors equal to the VAE's own, continues an encoding stopped
//! by a broken image once it is fixed, and refuses bad input with one line; the batches re-sample
//! the posteriors; a latent DiT trains on them, resumes exactly, samples decoded images and is
//! evaluated on them; the ImageNet recipe's command starts.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use burn::tensor::{Device, Tensor, TensorData};
use imm::data::Dataset;
use imm::data::latents::{LatentData, LatentManifest};
use imm::io::safetensors::Tensors;
use imm::networks::vae::{Vae, VaeConfig};

fn vae_file() -> PathBuf {
    std::env::var_os("IMM_GOLDEN_VAE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/golden_vae_tiny.safetensors"))
}

fn imm(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imm")).args(args).current_dir(dir).output().expect("run imm")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Two classes of four 24 x 20 images each, every image different.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("imm-encode-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (c, class) in ["cat", "dog"].iter().enumerate() {
        std::fs::create_dir_all(dir.join("images").join(class)).unwrap();
        for i in 0..4u32 {
            let img = image::RgbImage::from_fn(24, 20, |x, y| image::Rgb([(x * 10 + i * 30) as u8, (y * 12 + c as u32 * 90) as u8, (x * y) as u8]));
            img.save(dir.join("images").join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    dir
}

fn encode(dir: &Path, out: &str, extra: &[&str]) -> Output {
    let vae = vae_file();
    let mut args = vec!["encode", "--data", "images", "--vae", vae.to_str().unwrap(), "--out", out, "--shard-images", "3", "--device", "cpu"];
    args.extend_from_slice(extra);
    if !extra.contains(&"--resolution") {
        args.extend(["--resolution", "16"]);
    }
    imm(&args, dir)
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn fails(out: Output, expected: &str) {
    let said = text(&out);
    assert!(!out.status.success(), "should fail: {said}");
    assert!(said.contains(expected) && !said.contains("panicked"), "expected '{expected}':\n{said}");
}

#[test]
fn shards_hold_the_vaes_posteriors_and_labels() {
    let dir = scratch("shards");
    let said = ok(encode(&dir, "latents", &["--xflip"]));
    assert!(said.contains("Encoded 8 images of 2 classes"), "{said}");
    let manifest: LatentManifest = serde_json::from_str(&std::fs::read_to_string(dir.join("latents/latents.json")).unwrap()).unwrap();
    assert_eq!((manifest.images, manifest.shards.len(), manifest.latent_shape, manifest.classes.clone()), (8, 3, [4, 8, 8], vec!["cat".to_string(), "dog".to_string()]));

    // The second shard holds images 3, 4, 5 (cat 3, dog 0, dog 1), then their mirror images.
    let shard = Tensors::read(&dir.join("latents").join(&manifest.shards[1])).unwrap();
    assert_eq!(shard.get("moments").unwrap().shape, [6, 8, 8, 8]);
    assert_eq!(shard.get("labels").unwrap().values, [0.0, 1.0, 1.0, 0.0, 1.0, 1.0]);
    let device = Device::flex();
    let (vae, _) = Vae::load(&Tensors::read(&vae_file()).unwrap(), "param.", 16, "the golden VAE", &device).unwrap();
    let (pixels, _) = imm::data::folder::read_image_folder(&dir.join("images"), 16, 3).unwrap();
    let dog0: Vec<f32> = pixels.pixels[4 * 768..5 * 768].iter().map(|&v| v as f32 / 127.5 - 1.0).collect();
    let x = Tensor::<4>::from_data(TensorData::new(dog0, [1, 3, 16, 16]), &device);
    let read = |t: Tensor<4>| t.into_data().try_into_vec::<f32>().unwrap();
    let moments = &shard.get("moments").unwrap().values;
    for (i, x) in [(1, x.clone()), (4, x.flip([3]))] {
        let posterior = vae.encode(x);
        let ours = [read(posterior.mean), read(posterior.std)].concat();
        let stored = &moments[i * 512..(i + 1) * 512];
        let err = ours.iter().zip(stored).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(err < 1e-5, "image {i} of the shard differs from the VAE's posterior by {err}");
    }
    assert!(moments[512..1024] != moments[4 * 512..5 * 512], "the mirror image has its own posterior");

    // In f16, as the official code runs the VAE: close to f32, but computed in f16.
    ok(encode(&dir, "half", &["--xflip", "--precision", "f16"]));
    let half = Tensors::read(&dir.join("half").join(&manifest.shards[1])).unwrap();
    let half = &half.get("moments").unwrap().values;
    let scale = moments.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = half.iter().zip(moments).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
    assert!(err > 1e-5 && err < 2e-2, "f16 against f32: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_broken_image_stops_the_encoding_and_it_continues_once_fixed() {
    let dir = scratch("resume");
    ok(encode(&dir, "straight", &[]));
    let good = std::fs::read(dir.join("images/dog/1.png")).unwrap();
    std::fs::write(dir.join("images/dog/1.png"), &good[..good.len() / 2]).unwrap();
    fails(encode(&dir, "resumed", &[]), "dog/1.png");
    let written: Vec<String> = std::fs::read_dir(dir.join("resumed")).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect();
    let mut written = written;
    written.sort();
    assert_eq!(written, ["latents.json", "shard-000000.safetensors"], "the first shard alone, whole");
    let first = std::fs::metadata(dir.join("resumed/shard-000000.safetensors")).unwrap().modified().unwrap();

    std::fs::write(dir.join("images/dog/1.png"), &good).unwrap();
    let said = ok(encode(&dir, "resumed", &[]));
    assert!(said.contains("Continuing") && said.contains("1 of 3 shards"), "{said}");
    assert_eq!(std::fs::metadata(dir.join("resumed/shard-000000.safetensors")).unwrap().modified().unwrap(), first, "shard 0 was not written again");
    for file in ["latents.json", "shard-000000.safetensors", "shard-000001.safetensors", "shard-000002.safetensors"] {
        assert_eq!(std::fs::read(dir.join("resumed").join(file)).unwrap(), std::fs::read(dir.join("straight").join(file)).unwrap(), "{file}");
    }
    ok(encode(&dir, "resumed", &[]));
    fails(encode(&dir, "resumed", &["--resolution", "8"]), "holds latents of another resolution");
    fails(encode(&dir, "resumed", &["--xflip"]), "holds latents of another x-flip");
    fails(encode(&dir, "resumed", &["--precision", "f16"]), "holds latents of another precision");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = scratch("bad");
    let songunet = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/golden_songunet_small.safetensors");
    let args = |vae: &Path, data: &str| {
        let vae = vae.to_str().unwrap().to_string();
        vec!["encode".to_string(), "--data".into(), data.into(), "--vae".into(), vae, "--out".into(), "out".into(), "--resolution".into(), "16".into(), "--device".into(), "cpu".into()]
    };
    let run = |args: Vec<String>| imm(&args.iter().map(String::as_str).collect::<Vec<_>>(), &dir);
    fails(run(args(&songunet, "images")), "is not a diffusers AutoencoderKL file");
    let mut damaged = Tensors::read(&vae_file()).unwrap();
    let w = damaged.tensors.get_mut("param.decoder.conv_out.weight").unwrap();
    w.shape = vec![3, 32, 1, 9];
    std::fs::write(dir.join("damaged.safetensors"), damaged.to_bytes()).unwrap();
    std::fs::copy(vae_file().with_extension("json"), dir.join("damaged.json")).unwrap();
    fails(run(args(&dir.join("damaged.safetensors"), "images")), "decoder.conv_out.weight");
    // Without its config.json the group count is unknown: refused, not guessed.
    std::fs::copy(vae_file(), dir.join("alone.safetensors")).unwrap();
    fails(run(args(&dir.join("alone.safetensors"), "images")), "no config.json beside it gives the VAE's GroupNorm group count");
    // A VAE of 8 latent channels: the normalisation is for 4.
    let wide = VaeConfig::new().with_block_out_channels(vec![8, 8]).with_layers_per_block(1).with_latent_channels(8).with_norm_num_groups(4);
    let params = imm::io::weights::named_params(&wide.init(&burn::tensor::Device::flex()).unwrap());
    std::fs::write(dir.join("wide.safetensors"), Tensors { tensors: params, ..Default::default() }.to_bytes()).unwrap();
    std::fs::write(dir.join("wide.json"), r#"{"norm_num_groups": 4}"#).unwrap();
    fails(run(args(&dir.join("wide.safetensors"), "images")), "has 8 latent channels");
    std::fs::create_dir_all(dir.join("empty/sub")).unwrap();
    fails(run(args(&vae_file(), "empty")), "has no PNG or JPEG images");
    fails(run(args(&vae_file(), "missing")), "cannot read the image folder");
    let mut odd = args(&vae_file(), "images");
    odd[8] = "15".into();
    fails(run(odd), "--resolution must be a positive multiple of 2");
    assert!(!dir.join("out").exists(), "nothing written for refused input");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The training batches of an encoded folder: every draw a new sample of the posterior, normalised
/// with the official constants; labels with dropout; unfinished folders and shards of another VAE
/// refused.
#[test]
fn latent_batches_resample_the_posterior() {
    let dir = scratch("batches");
    std::fs::create_dir_all(dir.join("one/cat")).unwrap();
    std::fs::copy(dir.join("images/cat/2.png"), dir.join("one/cat/2.png")).unwrap();
    let vae = vae_file();
    let vae = vae.to_str().unwrap();
    ok(imm(&["encode", "--data", "one", "--vae", vae, "--out", "one-latents", "--resolution", "16", "--device", "cpu"], &dir));
    let (mut data, _) = LatentData::open(&dir.join("one-latents"), 3).unwrap();
    assert_eq!((data.len(), data.dim(), data.shape()), (1, 256, [4, 8, 8]));
    let moments = Tensors::read(&dir.join("one-latents/shard-000000.safetensors")).unwrap().get("moments").unwrap().values.clone();
    let (mean, std) = moments.split_at(256);
    let norm = data.norm().clone();
    let (first, labels) = data.sample_labelled(400);
    assert!(labels.is_none());
    // What each draw's noise must have been: N(0, 1) if the posterior was sampled and normalised.
    let eps: Vec<f64> = first
        .iter()
        .enumerate()
        .map(|(i, z)| {
            let (j, c) = (i % 256, (i % 256) / 64);
            (((z - norm.bias[c]) / norm.scale[c] - mean[j]) / std[j]) as f64
        })
        .collect();
    let m = eps.iter().sum::<f64>() / eps.len() as f64;
    let var = eps.iter().map(|e| (e - m) * (e - m)).sum::<f64>() / eps.len() as f64;
    assert!(m.abs() < 0.02 && (var - 1.0).abs() < 0.03, "noise mean {m}, variance {var}");
    assert_ne!(first[..256], data.sample(1)[..], "the next draw samples the posterior again");

    ok(encode(&dir, "latents", &[]));
    let (data, _) = LatentData::open(&dir.join("latents"), 3).unwrap();
    let mut data = data.with_labels(2, 0.5, 1).unwrap();
    let labels = data.sample_labelled(200).1.unwrap();
    let nulls = labels.index().iter().filter(|&&l| l == 2).count();
    assert!((50..150).contains(&nulls) && labels.index().contains(&0) && labels.index().contains(&1), "{nulls} nulls");
    assert!(LatentData::open(&dir.join("latents"), 3).unwrap().0.with_labels(1, 0.0, 1).is_err(), "labels beyond the classes");

    let shard = dir.join("latents/shard-000001.safetensors");
    let mut tensors = Tensors::read(&shard).unwrap();
    tensors.metadata.insert("imm_latents".into(), r#"{"vae": "0000000000000000", "resolution": 16}"#.into());
    std::fs::write(&shard, tensors.to_bytes()).unwrap();
    let err = LatentData::open(&dir.join("latents"), 3).err().unwrap();
    assert!(err.0.contains("shard-000001.safetensors is not a shard of this folder's VAE"), "{err}");
    let manifest = dir.join("latents/latents.json");
    let mut unfinished: LatentManifest = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    unfinished.shards.pop();
    std::fs::write(&manifest, serde_json::to_string(&unfinished).unwrap()).unwrap();
    let err = LatentData::open(&dir.join("latents"), 3).err().unwrap();
    assert!(err.0.contains("is not fully encoded (2 of 3 shards)"), "{err}");
    // A manifest of no images, or of shards of none, is refused (not a division by zero).
    for (images, shard_images) in [(0, unfinished.shard_images), (unfinished.images, 0)] {
        let empty = LatentManifest { images, shard_images, ..unfinished.clone() };
        std::fs::write(&manifest, serde_json::to_string(&empty).unwrap()).unwrap();
        let err = LatentData::open(&dir.join("latents"), 3).err().unwrap();
        assert!(err.0.contains("lists no images, or shards of no images"), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

fn weights(path: &Path) -> Vec<f32> {
    Tensors::read(path).unwrap().tensors.values().flat_map(|t| t.values.clone()).collect()
}

fn train<'a>(out: &'a str, kimg: &'a str, vae: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "train", "--preset", "latent-dit-s", "--data-dir", "latents", "--vae", vae, "--out", out, "--kimg", kimg, "--batch", "8",
        "--eval-steps", "1,2", "--device", "cpu",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn a_latent_model_trains_resumes_and_samples_decoded_images() {
    let dir = scratch("train");
    ok(encode(&dir, "latents", &["--xflip"]));
    let vae = vae_file();
    let vae = vae.to_str().unwrap();
    let said = ok(imm(&train("straight", "0.032", vae, &["--snapshot-kimg", "0.016"]), &dir));
    assert!(said.contains("Latents of 8 images of 2 classes (4x8x8)"), "{said}");
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("straight/config.json")).unwrap()).unwrap();
    assert_eq!((config["data"].as_str(), config["net"]["img_resolution"].as_u64(), config["net"]["num_classes"].as_u64()), (Some("latents"), Some(8), Some(2)));
    // The grids are decoded: 16 x 16 RGB images, not 8 x 8 latents.
    let grid = image::open(dir.join("straight/samples.png")).unwrap();
    let latent_grid_width = 2 * 8 + 10 * (8 + 2);
    assert!(grid.width() > latent_grid_width + 40 && grid.color().channel_count() == 3, "{}x{}", grid.width(), grid.height());

    ok(imm(&train("split", "0.016", vae, &[]), &dir));
    let resumed = ok(imm(&train("split", "0.032", vae, &["--resume"]), &dir));
    assert!(resumed.contains("Resuming") && resumed.contains("at 16 images"), "{resumed}");
    let (a, b) = (weights(&dir.join("straight/snapshots/ema-000000000032.safetensors")), weights(&dir.join("split/snapshots/ema-000000000032.safetensors")));
    assert_eq!(a, b, "the resumed run equals the straight one");

    let snapshot = dir.join("straight/snapshots/ema-000000000032.safetensors");
    let snapshot = snapshot.to_str().unwrap();
    ok(imm(&["sample", "--weights", snapshot, "--steps", "2", "--n", "3", "--out", "s.npz", "--vae", vae, "--class", "dog", "--device", "cpu"], &dir));
    let npz = std::fs::read(dir.join("s.npz")).unwrap();
    let header = String::from_utf8_lossy(&npz[..npz.len().min(400)]).to_string();
    assert!(header.contains("'shape': (3, 16, 16, 3)"), "{header}");
    fails(imm(&["sample", "--weights", snapshot, "--steps", "1", "--n", "2", "--out", "t.png", "--device", "cpu"], &dir), "pass --vae");
    evaluate_decoded(&dir, snapshot, vae);
    let other = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/golden/golden_songunet_small.safetensors");
    fails(imm(&train("novae", "0.016", vae, &[]).into_iter().filter(|a| *a != "--vae" && *a != vae).collect::<Vec<_>>(), &dir), "pass --vae");
    fails(imm(&train("nodata", "0.016", vae, &[]).into_iter().filter(|a| *a != "--data-dir" && *a != "latents").collect::<Vec<_>>(), &dir), "pass --data-dir");
    fails(imm(&train("othervae", "0.016", other.to_str().unwrap(), &[]), &dir), "is not a diffusers AutoencoderKL file");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `imm eval` of a latent model: decoded samples against an image folder's Inception statistics
/// (cached, and recomputed when an image changes) or against the same statistics as an .npz.
fn evaluate_decoded(dir: &Path, snapshot: &str, vae: &str) {
    let weights = imm::evaluation::inception::default_weights();
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", "--weights", snapshot, "--steps", "1,2", "--n", "6", "--device", "cpu"];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_imm")).args(&args).current_dir(dir).env("XDG_CACHE_HOME", dir.join("cache")).env("IMM_INCEPTION", &weights).output().unwrap()
    };
    let fids = |json: &str| -> Vec<f64> {
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(json)).unwrap()).unwrap();
        report["rows"].as_array().unwrap().iter().map(|r| r["value"].as_f64().unwrap()).collect()
    };
    fails(eval(&["--vae", vae]), "models VAE latents: pass --ref");
    fails(eval(&["--ref", "images"]), "pass --vae");
    fails(eval(&["--ref", "images", "--vae", vae, "--metric", "classifier"]), "--ref compares Inception features");
    fails(eval(&["--ref", "latents/latents.json", "--vae", vae]), "give an image folder or an .npz");
    let said = ok(eval(&["--ref", "images", "--vae", vae, "--json", "a.json"]));
    assert!(said.contains("fid-inception: 6 samples against 8 images in images"), "{said}");
    let first = fids("a.json");
    assert!(first.len() == 2 && first.iter().all(|f| f.is_finite() && *f > 0.0), "{first:?}");
    ok(eval(&["--ref", "images", "--vae", vae, "--json", "b.json"]));
    assert_eq!(fids("b.json"), first, "the cached statistics give the same FIDs");
    let stats_dir = dir.join("cache/imm/fid-stats");
    let cached: Vec<PathBuf> = std::fs::read_dir(&stats_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(cached.len(), 1, "{cached:?}");

    // The same statistics as ADM writes them (f64 `mu` and `sigma`) give the same FIDs.
    let stats = Tensors::read(&cached[0]).unwrap();
    let f64_bytes = |name: &str| -> Vec<u8> { stats.tensors[name].values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect() };
    let n = stats.tensors["mean"].values.len();
    let npz = imm::io::npz::npz(&[("mu", "<f8", &[n], &f64_bytes("mean")), ("sigma", "<f8", &[n, n], &f64_bytes("cov"))]).unwrap();
    std::fs::write(dir.join("ref.npz"), npz).unwrap();
    let said = ok(eval(&["--ref", "ref.npz", "--vae", vae, "--json", "c.json"]));
    assert!(said.contains("against the statistics in ref.npz"), "{said}");
    for (a, b) in fids("c.json").iter().zip(&first) {
        assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "npz {a}, folder {b}");
    }

    // A changed image gets statistics of its own.
    let img = image::RgbImage::from_fn(24, 20, |x, _| image::Rgb([255, (x * 10) as u8, 0]));
    img.save(dir.join("images/cat/0.png")).unwrap();
    ok(eval(&["--ref", "images", "--vae", vae, "--json", "d.json"]));
    assert_eq!(std::fs::read_dir(&stats_dir).unwrap().count(), 2);
    assert_ne!(fids("d.json"), first);
}

/// The paper's ImageNet-256 command builds DiT-XL/2 (675M parameters) on the latents and starts
/// training (stopped there: a step of it is minutes on a CPU).
#[test]
fn the_imagenet_recipe_starts() {
    let dir = scratch("xl");
    ok(encode(&dir, "latents", &[]));
    let vae = vae_file();
    let mut args = train("xl", "0.004", vae.to_str().unwrap(), &[]);
    args[2] = "imagenet256-xl2";
    args[12] = "4";
    let mut child = Command::new(env!("CARGO_BIN_EXE_imm"))
        .args(&args)
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let started = lines.find_map(|l| l.ok().filter(|l| l.starts_with("Training imm on imagenet256-xl2")));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    let started = started.unwrap_or_else(|| panic!("no start line ({status}): {stderr}"));
    let params: u64 = started.split(['(', ' ']).find_map(|w| w.parse().ok()).unwrap();
    assert!((600_000_000..700_000_000).contains(&params), "{started}");
    assert!(started.contains("batch 4"), "{started}");
    std::fs::remove_dir_all(&dir).unwrap();
}
