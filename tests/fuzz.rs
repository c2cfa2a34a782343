//! Every file reader on damaged input: truncated, bit-flipped, overwritten and random bytes
//! derived from valid files end in an error value (or a valid result), never a panic, an abort or
//! an allocation sized by an untrusted header. The readers: IDX images and labels (gzipped or
//! not), CIFAR-10 batches and archives, safetensors, snapshot cards (what `imm sample` and the
//! page's Load build a network from), classifier files, FID statistics and the page's 2D weights.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use burn::tensor::Device;
use imm::data::images::{gunzip_if_needed, md5_hex, read_cifar, read_idx_images, read_idx_labels, unpack_cifar10};
use imm::evaluation::classifier::Classifier;
use imm::data::latents::LatentManifest;
use imm::evaluation::fid::Gaussian;
use imm::io::npz::{npz, parse_floats};
use imm::io::safetensors::{Stored, Tensors};
use imm::io::weights::{load_named, named_params};
use imm::networks::mlp::MlpConfig;
use imm::networks::songunet::SongUNetConfig;
use imm::training::image_model::ImageModel;
use imm::training::presets::image_preset;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The largest single allocation any valid input here needs is a few MB; a request above this cap
/// fails, which aborts the process (as running out of memory would) and so fails the test.
const CAP: usize = 256 << 20;

struct Capped;

// SAFETY: forwards to the system allocator, refusing only oversized requests (a null pointer is
// the documented way to report failure).
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP { std::ptr::null_mut() } else { unsafe { System.alloc(layout) } }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP { std::ptr::null_mut() } else { unsafe { System.alloc_zeroed(layout) } }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP { std::ptr::null_mut() } else { unsafe { System.realloc(ptr, layout, new_size) } }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;

/// Damaged versions of `valid`: a prefix, a few flipped bits (half of them in the first 64 bytes,
/// where headers are), a window of random bytes, or random bytes of a similar length.
fn damaged(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    let (a, b, c, d) = (valid.clone(), valid.clone(), valid.clone(), valid);
    prop_oneof![
        (0..len).prop_map(move |n| a[..n].to_vec()),
        prop::collection::vec((any::<bool>(), any::<usize>(), 0..8u8), 1..8).prop_map(move |flips| {
            let mut v = b.clone();
            for (header, at, bit) in flips {
                let at = if header { at % len.min(64) } else { at % len };
                v[at] ^= 1 << bit;
            }
            v
        }),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..32)).prop_map(move |(at, bytes)| {
            let mut v = c.clone();
            let at = at % len;
            for (i, byte) in bytes.into_iter().enumerate() {
                if let Some(slot) = v.get_mut(at + i) {
                    *slot = byte;
                }
            }
            v
        }),
        prop::collection::vec(any::<u8>(), 0..2 * len.min(4096)).prop_map(move |mut random| {
            // Keep the real start now and then, so that parsing gets past the first check.
            if random.len() > 8 {
                random[..8].copy_from_slice(&d[..8.min(d.len())].iter().copied().chain([0; 8]).take(8).collect::<Vec<_>>());
            }
            random
        }),
    ]
}

/// Runs `read` on `cases` damaged versions of `valid`; a panic fails the test with the input's size.
fn never_panics<T>(name: &str, valid: Vec<u8>, cases: u32, read: impl Fn(&[u8]) -> Result<T, imm::Error>) {
    let mut runner = TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() });
    let (refused, accepted) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    let outcome = runner.run(&damaged(valid), |bytes| {
        match catch_unwind(AssertUnwindSafe(|| read(&bytes))) {
            Ok(Ok(_)) => accepted.set(accepted.get() + 1),
            Ok(Err(e)) => {
                prop_assert!(!e.0.is_empty(), "an empty error message");
                refused.set(refused.get() + 1);
            }
            Err(_) => prop_assert!(false, "{name}: a panic on {} bytes", bytes.len()),
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{name}: {e}");
    }
    let (refused, accepted) = (refused.get(), accepted.get());
    println!("{name}: {refused} refused, {accepted} accepted");
    assert!(refused > cases as usize / 4, "{name}: damaged inputs are refused ({refused} of {cases})");
}

fn idx_images(n: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    for v in [0x803u32, n, 28, 28] {
        bytes.extend(v.to_be_bytes());
    }
    bytes.extend((0..n as usize * 784).map(|i| (i * 7 % 256) as u8));
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, bytes).unwrap();
    gz.finish().unwrap()
}

#[test]
fn idx_and_cifar_readers_refuse_damage() {
    let images = |b: &[u8]| gunzip_if_needed(b.to_vec(), "images").and_then(|b| read_idx_images(&b, "images"));
    never_panics("IDX images", idx_images(3), 3000, images);
    never_panics("gzipped IDX images", gzip(&idx_images(3)), 2000, images);
    let mut labels = Vec::new();
    for v in [0x801u32, 10] {
        labels.extend(v.to_be_bytes());
    }
    labels.extend(0..10u8);
    never_panics("IDX labels", labels, 3000, |b| read_idx_labels(b, "labels"));
    let cifar: Vec<u8> = (0..3 * 3073).map(|i| (i % 251) as u8).collect();
    never_panics("CIFAR-10 batch", cifar, 2000, |b| read_cifar(b, "batch"));
}

/// A tar.gz of one small file in the CIFAR-10 archive's layout; unpacking happens after the
/// checksum, so each damaged archive is given its own.
#[test]
fn cifar_archives_refuse_damage() {
    let mut tar = vec![0u8; 512];
    let name = b"cifar-10-batches-bin/data_batch_1.bin";
    tar[..name.len()].copy_from_slice(name);
    tar[124..135].copy_from_slice(format!("{:011o}", 3073).as_bytes());
    tar[156] = b'0';
    tar.extend((0..3073).map(|i| (i % 256) as u8));
    tar.resize(512 * 8 + 1024, 0);
    let dir = std::env::temp_dir().join(format!("imm-fuzz-cifar-{}", std::process::id()));
    never_panics("CIFAR-10 archive", gzip(&tar), 1000, |b| unpack_cifar10(b, &md5_hex(b), &dir));
    std::fs::remove_dir_all(&dir).ok();
}

/// A small SongUNet's EMA snapshot as `imm train` writes it: weights and the card.
fn snapshot() -> Vec<u8> {
    let net = SongUNetConfig::new()
        .with_img_resolution(8)
        .with_in_channels(1)
        .with_out_channels(1)
        .with_model_channels(8)
        .with_channel_mult(vec![1, 2])
        .with_num_blocks(1)
        .with_attn_resolutions(vec![4]);
    let weights = named_params(&net.init(&mut imm::Rng::new(1), &Device::flex()).unwrap());
    let imm = image_preset("mnist-tiny").unwrap().imm;
    let card = serde_json::json!({"preset": "mnist-tiny", "net": net, "method": "imm", "method_config": imm, "nimg": 64});
    Tensors { tensors: weights, metadata: BTreeMap::from([("imm".to_string(), card.to_string())]) }.to_bytes()
}

#[test]
fn safetensors_and_snapshot_cards_refuse_damage() {
    let device = Device::flex();
    never_panics("safetensors", snapshot(), 3000, |b| Tensors::parse(b, "file"));
    let load = |b: &[u8]| ImageModel::load(&Tensors::parse(b, "file")?, "file", None, &device).map(drop);
    assert!(load(&snapshot()).is_ok(), "the valid snapshot loads");
    never_panics("snapshot", snapshot(), 1000, load);

    // The card alone, damaged inside a valid file: numbers, brackets and names changed.
    let valid = Tensors::parse(&snapshot(), "file").unwrap();
    let card = valid.metadata["imm"].clone().into_bytes();
    never_panics("snapshot card", card, 2000, |text| {
        let mut file = valid.clone();
        file.metadata.insert("imm".into(), String::from_utf8_lossy(text).into_owned());
        ImageModel::load(&file, "file", None, &device).map(drop)
    });
    // A card of a method this build does not know is refused, not sampled as IMM.
    let mut unknown = valid.clone();
    unknown.metadata.insert("imm".into(), unknown.metadata["imm"].replace("\"method\":\"imm\"", "\"method\":\"rectified-flow\""));
    let refused = ImageModel::load(&unknown, "file", None, &device).err().expect("refused");
    assert!(refused.0.contains("trained with the method 'rectified-flow'"), "{refused}");
    // A known method with another method's settings is refused too.
    let mut mixed = valid.clone();
    mixed.metadata.insert("imm".into(), mixed.metadata["imm"].replace("\"method\":\"imm\"", "\"method\":\"meanflow\""));
    let refused = ImageModel::load(&mixed, "file", None, &device).err().expect("refused");
    assert!(refused.0.contains("bad method config"), "{refused}");
    // A card that claims a far larger network than the file holds is refused before it is built.
    let mut huge = valid.clone();
    let card = huge.metadata["imm"].replace("\"model_channels\":8", "\"model_channels\":4000000");
    assert!(card.contains("4000000"));
    huge.metadata.insert("imm".into(), card);
    let refused = ImageModel::load(&huge, "file", None, &device).err().expect("refused");
    assert!(refused.0.contains("does not fit the network its card describes"), "{refused}");
    // Channel counts GroupNorm cannot split (a zero multiplier; 9 channels in min(32, 9 / 4) = 2
    // groups) are refused before any layer is built.
    let small = SongUNetConfig::new().with_img_resolution(8).with_in_channels(1).with_out_channels(1);
    for (net, message) in [
        (small.clone().with_model_channels(8).with_channel_mult(vec![1, 0]), "at least 1"),
        (small.with_model_channels(9).with_channel_mult(vec![1]), "GroupNorm cannot split 9 channels"),
    ] {
        let refused = net.init(&mut imm::Rng::new(0), &device).err().expect("refused");
        assert!(refused.0.contains(message), "{refused}");
    }
}

#[test]
fn classifier_statistics_and_page_weights_refuse_damage() {
    let device = Device::flex();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("www/models");
    let classifier = std::fs::read(root.join("classifier-mnist.safetensors")).unwrap();
    never_panics("classifier", classifier, 500, |b| Classifier::from_tensors(&Tensors::parse(b, "file")?, "file", &device).map(drop));
    let stats = Gaussian { mean: vec![0.5; 6], cov: vec![0.1; 36], count: 9 }.to_tensors("test").to_bytes();
    never_panics("FID statistics", stats, 3000, |b| Gaussian::from_tensors(&Tensors::parse(b, "file")?, "file"));
    // The page's Load weights (2D): the file's tensors into the playground's MLP under a prefix.
    let net = MlpConfig::new().with_hidden(16).with_blocks(1).init(&mut imm::Rng::new(2), &device);
    let tensors = named_params(&net).into_iter().map(|(name, t)| (format!("imm.{name}"), t)).collect::<BTreeMap<String, Stored>>();
    let file = Tensors { tensors, metadata: BTreeMap::from([("kind".to_string(), "imm-playground-2d".to_string())]) }.to_bytes();
    never_panics("2D weights", file, 3000, |b| load_named(net.clone(), &Tensors::parse(b, "file")?, "imm.", "file", None).map(drop));
}

/// ADM-style reference statistics (.npz of `mu` and `sigma`) and `imm encode`'s manifest: damage
/// is refused with a message, and so are headers that claim more than memory holds.
#[test]
fn npz_statistics_and_latent_manifests_refuse_damage() {
    let floats = |n: usize| (0..n).flat_map(|i| (i as f64 * 0.25).to_le_bytes()).collect::<Vec<u8>>();
    let (mu, sigma) = (floats(4), floats(16));
    let valid = npz(&[("mu", "<f8", &[4], &mu), ("sigma", "<f8", &[4, 4], &sigma)]).unwrap();
    let read = |b: &[u8]| parse_floats(b, "file", &["mu", "sigma"]);
    assert_eq!(read(&valid).unwrap()[1].shape, [4, 4], "the valid file reads");
    never_panics("npz statistics", valid, 3000, read);
    let huge = npz(&[("mu", "<f8", &[1 << 40, 1 << 40], &mu)]).unwrap();
    let refused = parse_floats(&huge, "file", &["mu"]).unwrap_err();
    assert!(refused.0.contains("a shape beyond any memory"), "{refused}");

    let dir = std::env::temp_dir().join(format!("imm-fuzz-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = serde_json::json!({"vae": "00112233aabbccdd", "precision": "f32", "resolution": 16, "latent_shape": [4, 2, 2],
        "xflip": false, "classes": ["a", "b"], "listing": "0011223344556677", "images": 3, "shard_images": 2,
        "shards": ["shard-000000.safetensors", "shard-000001.safetensors"]});
    let text = serde_json::to_vec(&manifest).unwrap();
    let read = |b: &[u8]| {
        std::fs::write(dir.join(LatentManifest::FILE), b).unwrap();
        LatentManifest::read(&dir)
    };
    assert!(read(&text).is_ok(), "the valid manifest reads");
    never_panics("latent manifest", text, 500, read);
    std::fs::remove_dir_all(&dir).unwrap();
}
