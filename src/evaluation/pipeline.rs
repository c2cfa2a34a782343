//! `imm eval`: sample quality at several step counts. Image models: FID of N samples (quantised to
//! 8 bits, as saved images are; a latent model's decoded by its VAE) against a Gaussian fitted to
//! the whole training split, computed once and cached, in the features of the FID Inception or,
//! for MNIST and Fashion-MNIST, of the small classifier trained here (`imm classifier`). With
//! `--ref`, against an image folder's Inception statistics (cached likewise) or an .npz of them
//! (ADM's reference batches). 2D models: the energy distance to held-out points of their toy
//! distribution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use clap::ValueEnum;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use crate::evaluation::toy::{held_out, sample_steps};
use crate::training::decoder::{Decoder, latent_vae};
use crate::training::run_dir::{write_atomic, write_json};
use crate::training::sample::generate;
use crate::data::folder::{list_image_folder, square};
use crate::data::images::{ImageData, ImageSet, quantize};
use crate::data::latents::fingerprint;
use crate::evaluation::classifier::Classifier;
use crate::evaluation::energy::energy_distance;
use crate::evaluation::fid::{Gaussian, Moments, Quality, quality};
use crate::evaluation::inception::{self, Inception};
use crate::io::npz::read_floats;
use crate::io::safetensors::Tensors;
use crate::io::weights::load_named;
use crate::method::Method;
use crate::method::sampler::{Grid, Sampler};
use crate::method::AnyMethod;
use crate::networks::mlp::{Mlp, MlpConfig};
use crate::training::image_model::ImageModel;
use crate::training::presets::{ImagePreset, Preset, image_preset, preset};
use crate::{Error, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Metric {
    /// The FID Inception-v3 (2048-d pool features), the standard.
    Inception,
    /// The small classifier of `imm classifier` (128-d), MNIST and Fashion-MNIST only.
    Classifier,
}

pub struct EvalRequest {
    pub weights: PathBuf,
    /// For weights without a card (an export of the official checkpoint).
    pub preset: Option<ImagePreset>,
    pub steps: Vec<usize>,
    /// Sampling times and IMM sampler [default: those the model was trained with].
    pub grid: Option<Grid>,
    pub sampler: Option<Sampler>,
    pub count: usize,
    pub seed: u64,
    /// Default: the classifier for MNIST and Fashion-MNIST, Inception otherwise.
    pub metric: Option<Metric>,
    /// Default: `www/models/classifier-SET.safetensors`.
    pub classifier: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Class of a conditional model: `all` (balanced; the default), an index or a name.
    pub class: Option<String>,
    /// Classifier-free guidance scale w (1: none).
    pub cfg: f64,
    /// Where to write the report as JSON.
    pub json: Option<PathBuf>,
    /// Compare with an image folder or an .npz of Inception statistics (`mu`, `sigma`) instead of
    /// the model's dataset.
    pub reference: Option<PathBuf>,
    /// A latent model's VAE, which decodes its samples.
    pub vae: Option<PathBuf>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalRow {
    pub steps: usize,
    pub value: f64,
    pub seconds: f64,
    /// Conditional models, classifier metric: the share of samples the classifier assigns to the
    /// class they were drawn for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_accuracy: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct EvalReport {
    pub weights: String,
    /// "fid-classifier", "fid-inception" or "energy-distance".
    pub metric: String,
    pub data: String,
    pub samples: usize,
    /// Data points behind the reference (0: unknown, for statistics read from an .npz).
    pub reference: u64,
    /// What the samples were compared with, in words.
    pub against: String,
    /// The value two samples of the data itself give (energy distance).
    pub floor: Option<f64>,
    /// The classifier-free guidance scale of a conditional model's samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guidance: Option<f64>,
    pub rows: Vec<EvalRow>,
}

enum Extractor {
    Inception(Inception),
    /// The network and the digest of its file, which keys its cached statistics.
    Classifier(Classifier, String),
}

impl Extractor {
    fn inception(device: &Device) -> Result<Self, Error> {
        Ok(Self::Inception(Inception::load(&inception::default_weights(), device)?))
    }

    /// The classifier of `set` at `file` [default: `www/models/classifier-SET.safetensors`].
    fn classifier(set: ImageSet, file: Option<&Path>, device: &Device) -> Result<Self, Error> {
        let path = file.map_or_else(|| PathBuf::from(format!("www/models/classifier-{}.safetensors", set.name())), Path::to_path_buf);
        if !path.exists() {
            return Err(Error::new(format!(
                "no classifier at {}; train one with `imm classifier --data {}` or pass --classifier",
                path.display(),
                set.name()
            )));
        }
        let (net, card) = Classifier::load(&path, device)?;
        if card.data != set {
            return Err(Error::new(format!("{} was trained on {}, the model on {}", path.display(), card.data.name(), set.name())));
        }
        let bytes = std::fs::read(&path).map_err(|e| Error::new(format!("cannot read {}: {e}", path.display())))?;
        Ok(Self::Classifier(net, crate::data::images::md5_hex(&bytes)[..12].to_string()))
    }

    /// "fid-inception" or "fid-classifier", as reports name the metric.
    fn metric(&self) -> &'static str {
        match self {
            Self::Inception(_) => "fid-inception",
            Self::Classifier(..) => "fid-classifier",
        }
    }

    fn key(&self) -> String {
        match self {
            Self::Inception(_) => "inception".into(),
            Self::Classifier(_, digest) => format!("classifier-{digest}"),
        }
    }

    /// Features of images in [-1, 1], C x side x side values each.
    fn features(&self, images: &[f32], channels: usize, side: usize, device: &Device) -> Result<Vec<f32>, Error> {
        let per = channels * side * side;
        let chunk = match self {
            Self::Inception(_) => 50,
            Self::Classifier(..) => 500,
        };
        let mut out = Vec::new();
        for part in images.chunks(chunk * per) {
            let x = Tensor::<4>::from_data(TensorData::new(part.to_vec(), [part.len() / per, channels, side, side]), device);
            let f = match self {
                Self::Inception(net) => net.features(x),
                Self::Classifier(net, _) => net.features(x),
            };
            out.extend(crate::floats(f, "features")?);
        }
        Ok(out)
    }

    /// The classifier's prediction for each image from its [`Extractor::features`] (so the
    /// network runs once); None for Inception.
    fn predict(&self, features: &[f32], device: &Device) -> Result<Option<Vec<usize>>, Error> {
        let Self::Classifier(net, _) = self else { return Ok(None) };
        let dim = crate::evaluation::classifier::FEATURES;
        let f = Tensor::<2>::from_data(TensorData::new(features.to_vec(), [features.len() / dim, dim]), device);
        let classes = net.head(f).argmax(1).into_data().convert::<i64>();
        let classes = classes.try_into_vec::<i64>().map_err(|e| Error::new(format!("reading predictions: {e:?}")))?;
        Ok(Some(classes.into_iter().map(|c| c as usize).collect()))
    }

    fn dim(&self) -> usize {
        match self {
            Self::Inception(_) => inception::FEATURES,
            Self::Classifier(..) => crate::evaluation::classifier::FEATURES,
        }
    }
}

fn bar(len: u64, prefix: String) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:32}] {human_pos}/{human_len} img  {elapsed} < {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// What generated images are compared with.
enum Reference<'a> {
    /// A dataset's training split (padded as in training).
    Set(ImageSet, Option<&'a Path>),
    /// The images of a folder, cropped as `imm encode` and image-folder training crop them.
    Folder(&'a Path),
    /// Inception statistics in an .npz: `mu` [2048] and `sigma` [2048, 2048], as in ADM's reference batches.
    Stats(&'a Path),
}

impl Reference<'_> {
    fn describe(&self, count: u64) -> String {
        match self {
            Self::Set(set, _) => format!("{count} {} training images", set.name()),
            Self::Folder(dir) => format!("{count} images in {}", dir.display()),
            Self::Stats(path) => format!("the statistics in {}", path.display()),
        }
    }

    fn name(&self) -> String {
        match self {
            Self::Set(set, _) => set.name().into(),
            Self::Folder(path) | Self::Stats(path) => path.display().to_string(),
        }
    }

    /// The Gaussian of the reference's features at `side` px, from the cache or computed and cached.
    fn gaussian(&self, extractor: &Extractor, channels: usize, side: usize, device: &Device) -> Result<Gaussian, Error> {
        let key = match self {
            Self::Stats(path) => return npz_gaussian(path),
            Self::Set(set, _) => format!("{}-{}-{side}px-train", extractor.key(), set.name()),
            Self::Folder(dir) => format!("{}-folder-{}-{side}px", extractor.key(), folder_fingerprint(dir)?),
        };
        let cache = inception::cache_dir().join("fid-stats");
        let path = cache.join(format!("{key}.safetensors"));
        if path.exists() {
            return Gaussian::from_tensors(&Tensors::read(&path)?, &path.display().to_string());
        }
        let moments = match self {
            Self::Set(set, data_dir) => set_moments(extractor, *set, side, *data_dir, device)?,
            Self::Folder(dir) => folder_moments(extractor, dir, channels, side, device)?,
            Self::Stats(_) => unreachable!("returned above"),
        };
        std::fs::create_dir_all(&cache).map_err(|e| Error::new(format!("cannot create {}: {e}", cache.display())))?;
        let about = format!("{} features of {} at {side} px", extractor.key(), self.name());
        let stored = moments.gaussian()?.to_tensors(&about);
        write_atomic(&path, &stored.to_bytes())?;
        // As stored (f32), so that this run and later ones measure against the same numbers.
        Gaussian::from_tensors(&stored, &path.display().to_string())
    }
}

fn set_moments(extractor: &Extractor, set: ImageSet, side: usize, data_dir: Option<&Path>, device: &Device) -> Result<Moments, Error> {
    let images = set.load(data_dir)?;
    let (channels, n) = (images.channels, images.len());
    let data = ImageData::new(images, side, false, 0)?;
    let mut moments = Moments::new(extractor.dim());
    let progress = bar(n as u64, "reference".into());
    for start in (0..n).step_by(1000) {
        let end = (start + 1000).min(n);
        let pixels: Vec<f32> = (start..end).flat_map(|i| data.image(i, false)).collect();
        moments.add(&extractor.features(&pixels, channels, side, device)?);
        progress.set_position(end as u64);
    }
    progress.finish_and_clear();
    Ok(moments)
}

/// Names, sizes and times of the folder's images: a changed folder gets new statistics.
fn folder_fingerprint(dir: &Path) -> Result<String, Error> {
    let (files, _) = list_image_folder(dir)?;
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut listing = format!("{}\n", root.display());
    for (file, _) in &files {
        let meta = std::fs::metadata(file).map_err(|e| Error::new(format!("cannot read {}: {e}", file.display())))?;
        let modified = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        listing.push_str(&format!("{}\t{}\t{modified}\n", file.display(), meta.len()));
    }
    Ok(fingerprint(listing.into_bytes()))
}

fn folder_moments(extractor: &Extractor, dir: &Path, channels: usize, side: usize, device: &Device) -> Result<Moments, Error> {
    use rayon::prelude::*;
    let (files, _) = list_image_folder(dir)?;
    let mut moments = Moments::new(extractor.dim());
    let progress = bar(files.len() as u64, "reference".into());
    for (i, part) in files.chunks(500).enumerate() {
        let bytes: Vec<Vec<u8>> = part.par_iter().map(|(file, _)| square(file, side, channels)).collect::<Result<_, _>>()?;
        let pixels: Vec<f32> = bytes.iter().flatten().map(|&b| b as f32 / 127.5 - 1.0).collect();
        moments.add(&extractor.features(&pixels, channels, side, device)?);
        progress.set_position((i * 500 + part.len()) as u64);
    }
    progress.finish_and_clear();
    Ok(moments)
}

/// ADM's reference statistics: `mu` and `sigma` of the FID Inception's pool features.
fn npz_gaussian(path: &Path) -> Result<Gaussian, Error> {
    let [mu, sigma]: [_; 2] = read_floats(path, &["mu", "sigma"])?.try_into().expect("two arrays");
    let n = inception::FEATURES;
    if mu.shape != [n] || sigma.shape != [n, n] {
        return Err(Error::new(format!(
            "{}: mu {:?} and sigma {:?} are not statistics of {n} Inception features",
            path.display(),
            mu.shape,
            sigma.shape
        )));
    }
    Ok(Gaussian { mean: mu.values, cov: sigma.values, count: 0 })
}

/// Samples the model at each step count from the same noise and measures the FID (images) or
/// the energy distance (2D) of each; writes the report to `request.json` when asked.
pub fn evaluate(request: &EvalRequest, device: &Device) -> Result<EvalReport, Error> {
    let file = Tensors::read(&request.weights)?;
    let what = request.weights.display().to_string();
    let card: Option<Value> = file.metadata.get("imm").and_then(|c| serde_json::from_str(c).ok());
    let toy = card.as_ref().and_then(|c| c["preset"].as_str()).and_then(|name| preset(name).ok());
    let report = match toy {
        Some(p) => evaluate_2d(&file, &what, card.as_ref().expect("a card"), &p, request, device)?,
        None => evaluate_images(&file, what, request, device)?,
    };
    if let Some(path) = &request.json {
        write_json(path, &report)?;
    }
    Ok(report)
}

fn evaluate_2d(file: &Tensors, what: &str, card: &Value, p: &Preset, request: &EvalRequest, device: &Device) -> Result<EvalReport, Error> {
    let bad = |e: serde_json::Error| Error::new(format!("{what}: bad card: {e}"));
    let config: MlpConfig = serde_json::from_value(card["net"].clone()).map_err(bad)?;
    let net = load_named(config.init(&mut Rng::new(0), device), file, "", what, None)?;
    let mut method = AnyMethod::from_card(card["method"].as_str(), card["method_config"].clone(), what)?;
    method.choose_sampling(request.grid.clone(), request.sampler)?;
    let samples = timed_samples(&method, &net, request, device)?;
    let (held_out, floor) = held_out(p, request.count);
    let rows = samples
        .into_iter()
        .map(|(steps, (x, seconds))| EvalRow { steps, value: energy_distance(&x, &held_out, 2), seconds, class_accuracy: None })
        .collect();
    Ok(EvalReport {
        weights: what.into(),
        metric: "energy-distance".into(),
        data: p.name.into(),
        samples: request.count,
        reference: request.count as u64,
        against: format!("{} held-out {} points", request.count, p.name),
        floor: Some(floor),
        guidance: None,
        rows,
    })
}

/// Samples at each step count from the same noise, with the seconds each took.
fn timed_samples<M: Method>(method: &M, net: &Mlp, request: &EvalRequest, device: &Device) -> Result<BTreeMap<usize, (Vec<f32>, f64)>, Error> {
    for &steps in &request.steps {
        method.check_steps(steps)?;
    }
    let mut out = BTreeMap::new();
    for &steps in &request.steps {
        let start = Instant::now();
        let x = sample_steps(method, net, &[steps], request.count, request.seed, device)?.remove(&steps).expect("one step count");
        out.insert(steps, (x, start.elapsed().as_secs_f64()));
    }
    Ok(out)
}

fn evaluate_images(file: &Tensors, what: String, request: &EvalRequest, device: &Device) -> Result<EvalReport, Error> {
    let mut model = ImageModel::load(file, &what, request.preset.as_ref(), device)?;
    model.method.choose_sampling(request.grid.clone(), request.sampler)?;
    let data = match (&model.card, &request.preset) {
        (Some(card), _) => card["preset"].as_str().and_then(image_preset).map(|p| p.data),
        (None, Some(p)) => Some(p.data),
        (None, None) => None,
    }
    .ok_or_else(|| Error::new(format!("{what} does not say which dataset it models; pass --preset")))?;
    let vae = latent_vae(&model, request.preset.as_ref());
    let latent = vae.is_some();
    let folder = !latent && model.card.as_ref().is_some_and(|card| card["classes"].is_array());
    let reference = match (&request.reference, data.images()) {
        (Some(path), _) if path.is_dir() => Reference::Folder(path),
        (Some(path), _) if path.extension().is_some_and(|e| e == "npz") => Reference::Stats(path),
        (Some(path), _) => return Err(Error::new(format!("--ref {}: give an image folder or an .npz of statistics (mu, sigma)", path.display()))),
        (None, Some(set)) if !folder => Reference::Set(set, request.data_dir.as_deref()),
        (None, _) => {
            let trained = if latent { "models VAE latents" } else { "was trained on an image folder" };
            return Err(Error::new(format!(
                "{what} {trained}: pass --ref with a folder of real images or an .npz of Inception statistics (mu, sigma; e.g. ADM's reference batch)"
            )));
        }
    };
    for &steps in &request.steps {
        model.check_steps(steps)?;
    }
    let classifier = match (request.metric, &reference) {
        (Some(Metric::Classifier), Reference::Folder(_) | Reference::Stats(_)) => {
            return Err(Error::new("--ref compares Inception features; leave out --metric classifier"));
        }
        (Some(Metric::Classifier), Reference::Set(ImageSet::Cifar10, _)) => {
            return Err(Error::new("the classifier metric covers MNIST and Fashion-MNIST; use --metric inception"));
        }
        (Some(Metric::Classifier) | None, Reference::Set(set @ (ImageSet::Mnist | ImageSet::FashionMnist), _)) => Some(*set),
        _ => None,
    };
    // Balanced classes by default: sample i is of class i mod L.
    let classes = model.classes(request.class.as_deref(), 1)?;
    // Guidance on a model without labels fails here, before any sampling.
    model.condition(classes, request.cfg, 0, 0)?;
    let (mut channels, mut side) = (model.config.in_channels(), model.config.img_resolution());
    let decoder = vae.map(|vae| Decoder::open(request.vae.as_deref(), vae, [channels, side, side], device)).transpose()?;
    if let Some(decoder) = &decoder {
        (channels, side) = decoder.image_shape();
    }
    let extractor = match classifier {
        Some(set) => Extractor::classifier(set, request.classifier.as_deref(), device)?,
        None => Extractor::inception(device)?,
    };
    let gaussian = reference.gaussian(&extractor, channels, side, device)?;
    let mut rows = Vec::new();
    for &steps in &request.steps {
        let start = Instant::now();
        let progress = bar(request.count as u64, format!("{steps} step{}", if steps == 1 { "" } else { "s" }));
        let mut moments = Moments::new(extractor.dim());
        let mut predicted: Option<Vec<usize>> = None;
        generate(&model, (classes, request.cfg), steps, request.count, request.seed, device, |batch, done| {
            let mut images = match &decoder {
                Some(decoder) => decoder.decode(&batch, device)?,
                None => batch,
            };
            for v in &mut images {
                *v = quantize(*v);
            }
            let features = extractor.features(&images, channels, side, device)?;
            moments.add(&features);
            if let Some(p) = extractor.predict(&features, device)? {
                predicted.get_or_insert_with(Vec::new).extend(p);
            }
            progress.set_position(done as u64);
            Ok(())
        })?;
        progress.finish_and_clear();
        let wanted = classes.map(|classes| classes.labels(0, request.count, model.label_dim()));
        let pairs = wanted.as_ref().zip(predicted.as_ref()).map(|(w, p)| (w.index(), p.as_slice()));
        let Quality { fid, accuracy } = quality(&moments, &gaussian, pairs)?;
        rows.push(EvalRow { steps, value: fid, seconds: start.elapsed().as_secs_f64(), class_accuracy: accuracy });
    }
    Ok(EvalReport {
        weights: what,
        metric: extractor.metric().into(),
        data: reference.name(),
        samples: request.count,
        reference: gaussian.count,
        against: reference.describe(gaussian.count),
        floor: None,
        guidance: classes.map(|_| request.cfg),
        rows,
    })
}

/// Prints an [`evaluate`] report: what was compared, then a row per step count.
pub fn print_report(report: &EvalReport) {
    match report.floor {
        Some(floor) => println!("Energy distance of {} samples to {} (floor {floor:.5}):", report.samples, report.against),
        None => println!("{}: {} samples against {}", report.metric, report.samples, report.against),
    }
    let accuracy = report.rows.iter().any(|r| r.class_accuracy.is_some());
    println!("{:>5} {:>10} {:>9}{}", "steps", "value", "seconds", if accuracy { "  class accuracy" } else { "" });
    for row in &report.rows {
        let class = row.class_accuracy.map_or(String::new(), |a| format!("  {:>13.1}%", 100.0 * a));
        println!("{:>5} {:>10.4} {:>9.1}{class}", row.steps, row.value, row.seconds);
    }
}

/// `imm golden`: checks a golden file of the official code and prints a row per tensor; fails
/// when any exceeds its tolerance.
pub fn golden(file: &Path, device: &Device) -> Result<(), Error> {
    let rows = crate::evaluation::golden::check(file, device)?;
    println!("{:<44} {:>11} {:>11} {:>9}", "tensor", "max abs err", "rel err", "tolerance");
    for row in &rows {
        let verdict = if row.ok() { "" } else { "  FAIL" };
        println!("{:<44} {:>11.3e} {:>11.3e} {:>9.0e}{verdict}", row.name, row.max_abs, row.rel, row.tol);
    }
    let failed = rows.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        return Err(Error::new(format!("{failed} of {} tensors exceed their tolerance", rows.len())));
    }
    println!("all {} tensors within tolerance", rows.len());
    Ok(())
}

/// `imm classifier`: trains the small classifier of `--metric classifier` (or keeps the one at
/// `out`), then writes beside it the reference the page's live quality number compares with.
pub fn classifier(
    set: ImageSet,
    epochs: usize,
    out: Option<PathBuf>,
    data_dir: Option<&Path>,
    seed: u64,
    keep: bool,
    device: &Device,
) -> Result<(), Error> {
    let out = out.unwrap_or_else(|| PathBuf::from(format!("www/models/classifier-{}.safetensors", set.name())));
    let net = if keep {
        Classifier::load(&out, device)?.0
    } else {
        let (net, card) = crate::evaluation::classifier::train(set, data_dir, epochs, seed, device, |nimg, loss| {
            println!("nimg {nimg:>7}  loss {loss:.4}");
        })?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::new(format!("cannot create {}: {e}", dir.display())))?;
        }
        write_atomic(&out, &net.to_tensors(&card).to_bytes())?;
        println!(
            "test accuracy {:.2}% after {} images ({:.0} s); wrote {}",
            100.0 * card.test_accuracy,
            card.nimg,
            card.seconds,
            out.display()
        );
        net
    };
    let reference = crate::evaluation::classifier::reference(&net, set, data_dir, device)?;
    let path = out.with_extension("ref.safetensors");
    write_atomic(&path, &reference.to_bytes())?;
    println!("real-image FIDs by grid size {}; wrote {}", reference.metadata["floors"], path.display());
    Ok(())
}
