//! The native image trainer and sampler. A run directory holds `config.json`, `metrics.jsonl`,
//! sample grids (`samples.png`, `samples/`), small EMA snapshots for sampling and the page
//! (`snapshots/`), and the resumable training state (`checkpoints/state-NIMG/`: weights, EMA,
//! optimizer moments, RNG and image count), each written to a temporary name and then renamed.
//! Latent presets train on a folder of `imm encode` latents and decode their grids and samples
//! with the VAE ([`Decoder`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use serde_json::{Value, json};

use crate::cli::device::DeviceChoice;
use crate::cli::run_dir::{Terminal, create_dir, io_error, latest_state, prepare_dir, states, tidy_interrupted, write_atomic, write_json};
use crate::data::folder::read_image_folder;
use crate::cli::encode::open_vae;
use crate::data::Dataset;
use crate::data::images::{CIFAR10_MD5, CIFAR10_URL, ImageSet, Images, LabelDraw, Split, unpack_cifar10};
use crate::data::latents::{LatentData, LatentManifest, LatentNorm};
use crate::io::npz::npz_u8;
use crate::io::plot::image_grid;
use crate::io::safetensors::Tensors;
use crate::io::weights::{load_named, named_params, param_ids};
use crate::method::Method;
use crate::method::precond::Condition;
use crate::method::sampler::{Grid, Sampler};
use crate::networks::Network;
use crate::networks::image::{ImageNet, ImageNetConfig};
use crate::training::image_model::{Classes, ImageModel};
use crate::networks::vae::{Vae, VaeConfig};
use crate::training::presets::{Data, ImagePreset};
use crate::training::ranks::{Ranks, check_same_config};
use crate::training::trainer::{Metrics, Observer, Progress, Trainer, fit};
use crate::{Error, Rng};

/// Images per row of a sample grid.
const GRID_COLUMNS: usize = 10;
/// Training states kept on disk (the newest ones).
const KEEP_STATES: usize = 2;

/// Where and how an image run goes.
pub struct ImageRun {
    pub out: PathBuf,
    pub data_dir: Option<PathBuf>,
    /// Users' images (one sub-folder per class) instead of the preset's dataset.
    pub image_folder: Option<PathBuf>,
    /// Continue from the newest state in `out/checkpoints`.
    pub resume: bool,
    /// Step counts shown in the sample grids.
    pub steps: Vec<usize>,
    /// More than one: train data-parallel over these (the first holds the weights).
    pub devices: Vec<Device>,
    /// The VAE of a latent preset's data, which decodes its sample grids.
    pub vae: Option<PathBuf>,
}

/// What a weights file needs to be sampled on its own: stored as its `imm` metadata. `classes`
/// names the classes of an image folder's or latent model's; `vae` is a latent model's VAE
/// fingerprint, which `imm sample --vae` checks.
fn card<M: Method + Serialize>(preset: &str, net: &ImageNetConfig, method: &M, nimg: u64, classes: &[String], vae: Option<&str>) -> String {
    let mut card = json!({"preset": preset, "net": net, "method": method.name(), "method_config": method, "nimg": nimg});
    if !classes.is_empty() {
        card["classes"] = json!(classes);
    }
    if let Some(vae) = vae {
        card["latents"] = json!({"vae": vae});
    }
    card.to_string()
}

/// Where a run's samples come from, read before its network is built (they may change it).
enum Source {
    Images(Images),
    /// A folder of `imm encode` latents and its manifest.
    Latents(PathBuf, LatentManifest),
}

/// The preset's training images, the image folder's with its class names, or the latents of a
/// latent preset's --data-dir with theirs; a conditional preset then takes the folder's classes,
/// and a latent one the latents' shape. Only a `writer` downloads a missing dataset and says what
/// it read.
fn training_data(preset: &ImagePreset, run: &ImageRun, writer: bool) -> Result<(ImagePreset, Source, Vec<String>), Error> {
    let conditional = preset.net.classes() > 0;
    let set = match preset.data {
        Data::Images(set) => set,
        Data::Latents => {
            let dir = run.data_dir.as_ref().filter(|_| run.image_folder.is_none()).ok_or_else(|| {
                Error::new(format!("{} trains on VAE latents: pass --data-dir with a folder that `imm encode` wrote", preset.name))
            })?;
            let manifest = LatentManifest::read(dir)?;
            let [l, h, w] = manifest.latent_shape;
            if h != w {
                return Err(Error::new(format!("{} holds {h} x {w} latents; square ones only", dir.display())));
            }
            let net = preset.net.clone().with_input(l, h).with_classes(if conditional { manifest.classes.len() } else { 0 });
            if writer {
                println!("Latents of {} images of {} classes ({l}x{h}x{w}) in {}.", manifest.images, manifest.classes.len(), dir.display());
            }
            let names = manifest.classes.clone();
            return Ok((ImagePreset { net, side: h, ..preset.clone() }, Source::Latents(dir.clone(), manifest), names));
        }
    };
    let Some(dir) = &run.image_folder else {
        let images = load_images(set, run.data_dir.as_deref(), conditional, writer)?;
        return Ok((preset.clone(), Source::Images(images), Vec::new()));
    };
    let (images, names) = read_image_folder(dir, preset.net.img_resolution(), preset.net.in_channels())?;
    let net = if conditional { preset.net.clone().with_classes(names.len()) } else { preset.net.clone() };
    if writer {
        println!("Read {} images of {} classes from {}.", images.len(), names.len(), dir.display());
    }
    Ok((ImagePreset { net, ..preset.clone() }, Source::Images(images), names))
}

/// Turns a latent model's samples into images: the VAE its latents came from, and their
/// normalisation undone.
pub(crate) struct Decoder {
    vae: Vae,
    config: VaeConfig,
    norm: LatentNorm,
    /// [L, h, w] of one latent.
    shape: [usize; 3],
}

/// Some for a latent model, with its VAE's fingerprint where the model says it: its card says it
/// works on latents, or a cardless export (the official checkpoint) says so by its --preset.
pub(crate) fn latent_vae<'a>(model: &'a ImageModel, preset: Option<&ImagePreset>) -> Option<Option<&'a str>> {
    let vae = model.card.as_ref().and_then(|card| card["latents"]["vae"].as_str());
    (vae.is_some() || (model.card.is_none() && preset.is_some_and(|p| p.data == Data::Latents))).then_some(vae)
}

impl Decoder {
    /// The VAE at `path`, which must be the one whose fingerprint is `vae` where that is known.
    pub(crate) fn open(path: Option<&Path>, vae: Option<&str>, shape: [usize; 3], device: &Device) -> Result<Decoder, Error> {
        let path = path.ok_or_else(|| Error::new("this model works on VAE latents: pass --vae with the VAE they were encoded with, to decode them"))?;
        let (model, config, print) = open_vae(path, device)?;
        if vae.is_some_and(|vae| vae != print) {
            return Err(Error::new(format!("{} is not the VAE these latents were encoded with", path.display())));
        }
        Ok(Decoder { vae: model, config, norm: LatentNorm::default(), shape })
    }

    /// (channels, side) of the decoded images.
    pub(crate) fn image_shape(&self) -> (usize, usize) {
        (self.config.channels, self.shape[1] * self.config.downscale())
    }

    /// Images from `n` normalised latents, in batches.
    ///
    /// # Shapes
    /// - latents: n x [L, h, w] values
    /// - output: n x [C, H, W] values, about [-1, 1]
    pub(crate) fn decode(&self, latents: &[f32], device: &Device) -> Result<Vec<f32>, Error> {
        const BATCH: usize = 16;
        let [l, h, w] = self.shape;
        let mut out = Vec::new();
        for chunk in latents.chunks(BATCH * l * h * w) {
            let n = chunk.len() / (l * h * w);
            let raw = self.norm.raw(chunk, h * w);
            let images = self.vae.decode(Tensor::from_data(TensorData::new(raw, [n, l, h, w]), device));
            let data = images.try_into_data().map_err(|e| crate::read_error(e, "decoded images"))?;
            out.extend(data.convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::new(format!("{e:?}")))?);
        }
        Ok(out)
    }
}

struct Saver<'a> {
    /// None on ranks other than 0, which neither print nor write.
    terminal: Option<Terminal>,
    out: &'a Path,
    preset: &'a ImagePreset,
    steps: &'a [usize],
    /// Class names of an image folder's model (empty otherwise).
    classes: &'a [String],
    every: u64,
    next: u64,
    /// Prior noise of the grids, the same at every snapshot.
    z: Vec<f32>,
    saved_at: u64,
    /// A latent model's decoder, and the fingerprint of its VAE for the cards.
    decoder: Option<(Decoder, String)>,
}

impl Saver<'_> {
    fn save<N: Network, M: Method + Serialize>(&mut self, trainer: &Trainer<N, M>) -> Result<(), Error> {
        let Some(terminal) = &self.terminal else {
            return Ok(());
        };
        let (out, nimg) = (self.out, trainer.nimg);
        let (channels, side) = (self.preset.net.in_channels(), self.preset.side);
        // Never a non-finite file over a good one (the trainer skips such steps; this is the last guard).
        let (net, ema) = (named_params(&trainer.net), named_params(&trainer.ema));
        if let Some(name) = net.iter().chain(&ema).find(|(_, t)| !t.values.iter().all(|v| v.is_finite())).map(|(n, _)| n) {
            return Err(Error::new(format!("the weights at {nimg} images are not finite ({name}); nothing was saved")));
        }

        let device = trainer.ema.devices()[0].clone();
        // A conditional model's grid has one class per column.
        let classes = self.preset.net.classes();
        let condition = Condition::labels((classes > 0).then(|| Classes::All { row: 1 }.labels(0, GRID_COLUMNS, classes)));
        let mut rows = Vec::new();
        for &k in self.steps {
            let z = Tensor::<2>::from_data(TensorData::new(self.z.clone(), [GRID_COLUMNS, channels * side * side]), &device);
            let x = trainer.method.sample(&trainer.ema, z, &condition, k, &mut Rng::new(nimg))?;
            let mut values = x.into_data().try_into_vec::<f32>().map_err(|e| Error::new(format!("reading samples: {e:?}")))?;
            if let Some((decoder, _)) = &self.decoder {
                values = decoder.decode(&values, &device)?;
            }
            rows.push((format!("{k} step{}", if k == 1 { "" } else { "s" }), values));
        }
        let (channels, side) = self.decoder.as_ref().map_or((channels, side), |(d, _)| d.image_shape());
        create_dir(&out.join("samples"))?;
        let grid = out.join("samples").join(format!("{nimg:012}.png"));
        image_grid(&rows, channels, side, 2, &grid)?;
        write_atomic(&out.join("samples.png"), &std::fs::read(&grid).map_err(|e| io_error(&grid, e))?)?;

        let mut metadata = BTreeMap::new();
        metadata.insert("imm".to_string(), card(self.preset.name, &self.preset.net, &trainer.method, nimg, self.classes, self.decoder.as_ref().map(|(_, vae)| vae.as_str())));
        create_dir(&out.join("snapshots"))?;
        let snapshot = out.join("snapshots").join(format!("ema-{nimg:012}.safetensors"));
        write_atomic(&snapshot, &Tensors { tensors: ema.clone(), metadata: metadata.clone() }.to_bytes())?;

        // The resumable state: a directory made under a temporary name, then renamed.
        let states_dir = out.join("checkpoints");
        create_dir(&states_dir)?;
        let tmp = states_dir.join(format!("state-{nimg:012}.partial"));
        create_dir(&tmp)?;
        let ids = serde_json::to_string(&param_ids(&trainer.net)).expect("ids serialise");
        metadata.insert("param_ids".to_string(), ids);
        let write = |name: &str, bytes: &[u8]| std::fs::write(tmp.join(name), bytes).map_err(|e| io_error(&tmp.join(name), e));
        write("net.safetensors", &Tensors { tensors: net, metadata: metadata.clone() }.to_bytes())?;
        write("ema.safetensors", &Tensors { tensors: ema, metadata }.to_bytes())?;
        write("optimizer.bpk", &trainer.optimizer_bytes()?)?;
        write("progress.json", serde_json::to_string_pretty(&trainer.progress()).expect("progress serialises").as_bytes())?;
        let done = states_dir.join(format!("state-{nimg:012}"));
        if done.exists() {
            std::fs::remove_dir_all(&done).map_err(|e| io_error(&done, e))?;
        }
        std::fs::rename(&tmp, &done).map_err(|e| io_error(&done, e))?;
        let all = states(&states_dir);
        for (_, old) in &all[..all.len().saturating_sub(KEEP_STATES)] {
            std::fs::remove_dir_all(old).map_err(|e| io_error(old, e))?;
        }
        self.saved_at = nimg;
        terminal.println(&format!(
            "     nimg {nimg:>9}  wrote {}, {} and {}",
            grid.display(),
            snapshot.display(),
            done.display()
        ));
        Ok(())
    }
}

impl Observer for Saver<'_> {
    fn on_step<N: Network, M: Method>(&mut self, trainer: &Trainer<N, M>) -> Result<(), Error> {
        self.terminal.as_mut().map_or(Ok(()), |t| t.on_step(trainer))
    }

    fn on_log(&mut self, record: &Metrics) -> Result<(), Error> {
        self.terminal.as_mut().map_or(Ok(()), |t| t.on_log(record))
    }
}

/// The run's configuration; a resumed run must match it (its length may change).
fn run_config<M: Method + Serialize>(preset: &ImagePreset, method: &M) -> Value {
    let mut config = json!({
        "preset": preset.name,
        "data": preset.data.name(),
        "side": preset.side,
        "xflip": preset.xflip,
        "net": preset.net,
        "method": method.name(),
        "method_config": method,
        "train": preset.train,
        "snapshot_every_nimg": preset.snapshot_every_nimg,
    });
    // Only conditional runs name them, so that earlier unconditional runs still resume.
    if preset.net.classes() > 0 {
        config["label_dropout"] = json!(preset.label_dropout);
        config["labels"] = json!(preset.labels);
    }
    config
}

fn differences(saved: &Value, current: &Value) -> Vec<String> {
    // Length, logging and saving cadence may change between sessions, and the learning rate (to
    // continue a run whose numbers stopped being finite); the rest of the maths may not.
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(train) = v.get_mut("train").and_then(Value::as_object_mut) {
            train.remove("total_nimg");
            train.remove("log_every_nimg");
            train.remove("lr");
        }
        // Precision is how the same f32 weights compute: a run may resume in another. Runs saved
        // before labels have no label_dim, which is none.
        if let Some(net) = v.get_mut("net").and_then(Value::as_object_mut) {
            net.remove("precision");
            if net.get("label_dim").is_some_and(Value::is_null) {
                net.remove("label_dim");
            }
        }
        if let Some(o) = v.as_object_mut() {
            o.remove("device");
            o.remove("devices");
            o.remove("ranks");
            o.remove("snapshot_every_nimg");
            // Conditional runs saved before the choice drew labels per particle.
            if o.get("labels") == Some(&json!(LabelDraw::Particle)) {
                o.remove("labels");
            }
        }
        v
    };
    let (saved, current) = (strip(saved), strip(current));
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<std::collections::BTreeSet<_>>()).unwrap_or_default();
    keys(&saved).union(&keys(&current)).filter(|&k| saved.get(k) != current.get(k)).cloned().collect()
}

/// Trains `method` on the preset's images, saving grids, snapshots and states every
/// `snapshot_every_nimg` images and at the end. With `ranks`, this is one of several processes
/// that train together: each reads the data and the run directory, rank 0 alone writes.
pub fn train_images<M: Method + Serialize + Clone>(
    preset: &ImagePreset,
    method: M,
    (device, choice): (&Device, DeviceChoice),
    run: &ImageRun,
    ranks: Option<Box<dyn Ranks>>,
) -> Result<(), Error> {
    let out = &run.out;
    let writer = ranks.as_ref().is_none_or(|r| r.rank() == 0);
    let say = |line: String| {
        if writer {
            println!("{line}");
        }
    };
    if writer {
        prepare_dir(out)?;
    }
    for &k in &run.steps {
        method.check_steps(k)?;
    }
    if let Some(ranks) = &ranks {
        // Before anything is read or written: every rank runs the same command.
        let launch = json!({"run": run_config(preset, &method), "image_folder": run.image_folder, "data_dir": run.data_dir,
            "out": out, "resume": run.resume, "devices": run.devices.len().max(1), "eval_steps": run.steps});
        check_same_config(ranks.as_ref(), &launch)?;
    }
    // Rank 0 reads first: it may download the dataset that the other ranks then read.
    let wait_for_rank_0 = || ranks.as_ref().map(|r| r.broadcast(&[]));
    if !writer {
        wait_for_rank_0();
    }
    let (preset, source, class_names) = training_data(preset, run, writer)?;
    if writer {
        wait_for_rank_0();
    }
    let preset = &preset;
    let mut config = run_config(preset, &method);
    if let Some(dir) = &run.image_folder {
        config["image_folder"] = json!(dir);
        config["classes"] = json!(class_names);
    }
    let decoder = match &source {
        Source::Latents(_, manifest) => {
            config["latents"] = json!({"vae": manifest.vae, "latent_shape": manifest.latent_shape, "classes": manifest.classes});
            Some((Decoder::open(run.vae.as_deref(), Some(&manifest.vae), manifest.latent_shape, device)?, manifest.vae.clone()))
        }
        Source::Images(_) => None,
    };
    let config_path = out.join("config.json");
    let latest = latest_state(&out.join("checkpoints"));
    match (run.resume, &latest) {
        (false, Some((_, dir))) => {
            return Err(Error::new(format!(
                "{} already holds a run (newest state {}); pass --resume to continue it, or choose another --out",
                out.display(),
                dir.display()
            )));
        }
        (true, None) => {
            return Err(Error::new(format!("nothing to resume in {}: it has no checkpoints/state-*", out.display())));
        }
        (true, Some(_)) => {
            let text = std::fs::read_to_string(&config_path).map_err(|e| io_error(&config_path, e))?;
            let saved: Value = serde_json::from_str(&text).map_err(|e| Error::new(format!("{} is damaged: {e}", config_path.display())))?;
            let differ = differences(&saved, &config);
            if !differ.is_empty() {
                return Err(Error::new(format!(
                    "the run in {} was started with a different {}; resume it with the options it was started with",
                    out.display(),
                    differ.join(", ")
                )));
            }
        }
        (false, None) if writer => {
            let mut with_device = config.clone();
            with_device["device"] = json!(choice);
            with_device["devices"] = json!(run.devices.len().max(1));
            with_device["ranks"] = json!(ranks.as_ref().map_or(1, |r| r.count()));
            write_json(&config_path, &with_device)?;
            std::fs::write(out.join("metrics.jsonl"), "").map_err(|e| io_error(&out.join("metrics.jsonl"), e))?;
            // A session killed before its first state may have left writes half done.
            tidy_interrupted(out, 0)?;
        }
        (false, None) => {}
    }

    let train = preset.train.clone();
    let mut seeds = Rng::new(train.seed);
    let net = preset.net.init(&mut seeds.fork(), &device.clone().autodiff())?;
    let (seed, group) = (seeds.next_u64(), method.group());
    let mut data: Box<dyn Dataset> = match source {
        Source::Images(images) => Box::new(preset.batches(images, seed, group)?),
        Source::Latents(dir, _) => Box::new(preset.latent_batches(LatentData::open(&dir, seed)?.0, group)?),
    };
    let mut trainer = Trainer::new(net, method, train.clone())?;
    if run.devices.len() > 1 {
        trainer = trainer.with_devices(run.devices.iter().map(|d| d.clone().autodiff()).collect())?;
    }
    let rank_count = ranks.as_ref().map(|r| r.count());
    if let Some(ranks) = ranks {
        trainer = trainer.with_ranks(ranks)?;
    }
    if let Some((_, dir)) = latest.filter(|_| run.resume) {
        let what = dir.display().to_string();
        let net_file = Tensors::read(&dir.join("net.safetensors"))?;
        let ids: BTreeMap<String, u64> = net_file
            .metadata
            .get("param_ids")
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| Error::new(format!("{what}/net.safetensors has no parameter ids")))?;
        let net = load_named(trainer.net.clone(), &net_file, "", &what, Some(&ids))?;
        let ema = load_named(trainer.ema.clone(), &Tensors::read(&dir.join("ema.safetensors"))?, "", &what, Some(&ids))?;
        let progress_path = dir.join("progress.json");
        let progress: Progress = std::fs::read_to_string(&progress_path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| Error::new(format!("{} is missing or damaged", progress_path.display())))?;
        let optimizer = std::fs::read(dir.join("optimizer.bpk")).map_err(|e| io_error(&dir.join("optimizer.bpk"), e))?;
        trainer.resume(net, ema, progress, optimizer)?;
        data.skip_to(trainer.nimg);
        if writer {
            tidy_interrupted(out, trainer.nimg)?;
        }
        say(format!("Resuming {} at {} images.", out.display(), trainer.nimg));
    }
    // Every rank starts from the same weights (a fresh run from the same seed, or the same state).
    trainer.check_ranks()?;

    let label = trainer.method.name();
    let every = preset.snapshot_every_nimg;
    let dim = preset.net.in_channels() * preset.side * preset.side;
    let mut saver = Saver {
        terminal: if writer { Some(Terminal::new(label, train.total_nimg, out.join("metrics.jsonl"))?) } else { None },
        out,
        preset,
        steps: &run.steps,
        classes: &class_names,
        every,
        next: (trainer.nimg / every + 1) * every,
        z: Rng::new(train.seed ^ 0x6e1d).normal_vec(GRID_COLUMNS * dim, trainer.method.sigma_data()),
        saved_at: trainer.nimg,
        decoder,
    };
    let over_ranks = rank_count.map_or(String::new(), |n| format!(" over {n} processes"));
    say(format!(
        "Training {} on {} ({} parameters) for {} images, batch {}, on {:?}{over_ranks}.",
        label,
        preset.name,
        burn::module::Module::num_params(&trainer.net),
        train.total_nimg,
        train.batch,
        choice
    ));
    let start = Instant::now();
    let result = fit_saving(&mut trainer, data.as_mut(), &start, &mut saver);
    if let Some(terminal) = &saver.terminal {
        terminal.finish();
    }
    if let (Err(e), Err(_)) = (&result, trainer.check_health()) {
        let kept = latest_state(&out.join("checkpoints"))
            .map(|(_, dir)| format!("the newest saved state, {}, is intact: continue from it with --resume (and a lower --lr)", dir.display()))
            .unwrap_or_else(|| "nothing was saved yet".into());
        return Err(Error::new(format!("{e}; {kept}")));
    }
    result?;
    say(format!(
        "Trained to {} images in {:.0} s. Samples: {}; EMA weights: {}.",
        trainer.nimg,
        start.elapsed().as_secs_f64(),
        out.join("samples.png").display(),
        out.join("snapshots").display()
    ));
    Ok(())
}

/// The training images, with their labels when `labelled`; CIFAR-10, when not found and no
/// --data-dir was given, is downloaded (by a `writer`) from its home page (with curl), checked
/// against its published MD5 and unpacked into data/cifar10.
fn load_images(set: ImageSet, data_dir: Option<&Path>, labelled: bool, writer: bool) -> Result<Images, Error> {
    let load = |dir: Option<&Path>| if labelled { set.load_labelled(dir, Split::Train) } else { set.load(dir) };
    match load(data_dir) {
        Err(missing) if set == ImageSet::Cifar10 && data_dir.is_none() && writer => {
            let dir = PathBuf::from("data").join(set.name());
            println!("Downloading CIFAR-10 from {CIFAR10_URL} into {} ...", dir.display());
            let fetched = std::process::Command::new("curl")
                .args(["-fsSL", "--connect-timeout", "20", CIFAR10_URL])
                .output()
                .map_err(|e| format!("cannot run curl: {e}"))
                .and_then(|o| if o.status.success() { Ok(o.stdout) } else { Err(String::from_utf8_lossy(&o.stderr).trim().to_string()) });
            let archive = fetched.map_err(|why| Error::new(format!("{missing} (the download failed: {why})")))?;
            unpack_cifar10(&archive, CIFAR10_MD5, &dir)?;
            load(Some(&dir))
        }
        result => result,
    }
}

/// [`fit`] in stretches between snapshots, saving after each stretch and at the end.
fn fit_saving<M: Method + Serialize + Clone>(
    trainer: &mut Trainer<ImageNet, M>,
    data: &mut dyn Dataset,
    start: &Instant,
    saver: &mut Saver,
) -> Result<(), Error> {
    let total = trainer.config.total_nimg;
    while trainer.nimg < total {
        let end = saver.next.min(total);
        trainer.config.total_nimg = end;
        let result = fit(trainer, data, || start.elapsed().as_secs_f64(), saver);
        trainer.config.total_nimg = total;
        result?;
        saver.save(trainer)?;
        saver.next = (trainer.nimg / saver.every + 1) * saver.every;
    }
    if saver.saved_at != trainer.nimg {
        saver.save(trainer)?;
    }
    Ok(())
}

/// What `imm sample` makes.
pub struct SampleRequest {
    pub weights: PathBuf,
    /// Used when the weights file does not say how it was trained (e.g. an export of the official checkpoint).
    pub preset: Option<ImagePreset>,
    pub steps: usize,
    pub sampler: Option<Sampler>,
    pub grid: Option<Grid>,
    pub seed: u64,
    pub count: usize,
    /// Class of a conditional model: `all` (one grid row per class; the default), an index or a name.
    pub class: Option<String>,
    /// Classifier-free guidance scale w (1: none).
    pub cfg: f64,
    /// A .png grid or an .npz of uint8 images [N, H, W, C] under `arr_0`.
    pub out: PathBuf,
    /// A latent model's VAE, which decodes its samples.
    pub vae: Option<PathBuf>,
}

/// Samples a weights file into a PNG grid or an .npz for FID tools.
pub fn sample(request: &SampleRequest, device: &Device) -> Result<(), Error> {
    let file = Tensors::read(&request.weights)?;
    let what = request.weights.display().to_string();
    if !file.metadata.contains_key("imm") && request.preset.is_none() {
        return Err(Error::new(format!("{what} does not say which network it holds; pass --preset")));
    }
    let mut model = ImageModel::load(&file, &what, request.preset.as_ref(), device)?;
    model.choose_sampling(request.grid.clone(), request.sampler);
    model.check_steps(request.steps)?;
    let classes = model.classes(request.class.as_deref(), GRID_COLUMNS)?;
    // Guidance on a model without labels fails here, before any sampling.
    model.condition(classes, request.cfg, 0, 0)?;
    let (mut c, mut side) = (model.config.in_channels(), model.config.img_resolution());
    let decoder = latent_vae(&model, request.preset.as_ref()).map(|vae| Decoder::open(request.vae.as_deref(), vae, [c, side, side], device)).transpose()?;
    let mut images = Vec::new();
    generate(&model, (classes, request.cfg), request.steps, request.count, request.seed, device, |batch, _| {
        images.extend(match &decoder {
            Some(decoder) => decoder.decode(&batch, device)?,
            None => batch,
        });
        Ok(())
    })?;
    if let Some(decoder) = &decoder {
        (c, side) = decoder.image_shape();
    }
    let is_npz = request.out.extension().is_some_and(|e| e == "npz");
    if is_npz {
        write_atomic(&request.out, &npz_u8(&images, request.count, c, side)?)?;
    } else {
        let per_row = GRID_COLUMNS * c * side * side;
        let rows: Vec<(String, Vec<f32>)> = images.chunks(per_row).map(|r| (String::new(), r.to_vec())).collect();
        image_grid(&rows, c, side, 2, &request.out)?;
    }
    println!("Wrote {} samples ({} step{}) to {}.", request.count, request.steps, if request.steps == 1 { "" } else { "s" }, request.out.display());
    Ok(())
}

/// `count` samples in batches, all from one seeded stream of prior noise, of the given classes
/// with guidance scale w; `each` receives every batch (n x dim values) and the number done.
pub(crate) fn generate(
    model: &ImageModel,
    (classes, guidance): (Option<Classes>, f64),
    steps: usize,
    count: usize,
    seed: u64,
    device: &Device,
    mut each: impl FnMut(Vec<f32>, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    const BATCH: usize = 256;
    let dim = model.dim();
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let z = Tensor::<2>::from_data(TensorData::new(rng.normal_vec(n * dim, model.sigma_data()), [n, dim]), device);
        let x = model.sample(z, &model.condition(classes, guidance, done, n)?, steps, &mut rng)?;
        done += n;
        each(x.into_data().try_into_vec::<f32>().map_err(|e| Error::new(format!("reading samples: {e:?}")))?, done)?;
    }
    Ok(())
}

/// `imm export`: a weights file rewritten in f16 with its card (half the size, for the page).
pub fn export(weights: &Path, out: &Path) -> Result<(), Error> {
    let bytes = Tensors::read(weights)?.to_bytes_as(true);
    write_atomic(out, &bytes)?;
    println!("Wrote {} ({:.2} MB, f16).", out.display(), bytes.len() as f64 / 1e6);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run saved before labels existed (no `label_dim`) resumes as unconditional, not as another network.
    #[test]
    fn runs_saved_before_labels_resume() {
        let current = json!({"net": {"model_channels": 16, "label_dim": null, "precision": null}, "train": {}});
        let saved = json!({"net": {"model_channels": 16}, "train": {}, "device": "cpu", "devices": 2});
        assert!(differences(&saved, &current).is_empty());
        let labelled = json!({"net": {"model_channels": 16, "label_dim": 10}, "train": {}});
        assert_eq!(differences(&saved, &labelled), ["net"]);
        // Conditional runs saved before the choice of label draw drew them per particle.
        let conditional = json!({"net": {"label_dim": 10}, "label_dropout": 0.1});
        let per_particle = json!({"net": {"label_dim": 10}, "label_dropout": 0.1, "labels": "particle"});
        let grouped = json!({"net": {"label_dim": 10}, "label_dropout": 0.1, "labels": "group"});
        assert!(differences(&conditional, &per_particle).is_empty());
        assert_eq!(differences(&conditional, &grouped), ["labels"]);
        assert_eq!(differences(&grouped, &per_particle), ["labels"]);
    }
}
