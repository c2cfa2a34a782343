//! An image training run on disk. A run directory holds `config.json`, `metrics.jsonl`,
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

use crate::DeviceChoice;
use crate::data::Dataset;
use crate::data::folder::read_image_folder;
use crate::data::images::{CIFAR10_MD5, CIFAR10_URL, ImageSet, Images, LabelDraw, Split, unpack_cifar10};
use crate::data::latents::{LatentData, LatentManifest};
use crate::io::plot::image_grid;
use crate::io::safetensors::Tensors;
use crate::io::weights::{load_named, named_params, param_ids};
use crate::method::Method;
use crate::method::precond::Condition;
use crate::networks::Network;
use crate::networks::image::{ImageNet, ImageNetConfig};
use crate::training::decoder::Decoder;
use crate::training::image_model::Classes;
use crate::training::presets::{Data, ImagePreset};
use crate::training::run_dir::{Terminal, create_dir, io_error, latest_state, prepare_dir, states, tidy_interrupted, write_atomic, write_json};
use crate::training::sample::GRID_COLUMNS;
use crate::training::ranks::{Ranks, check_same_config};
use crate::training::trainer::{Metrics, Observer, Progress, Seeds, Trainer, fit};
use crate::{Error, Rng};

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
    decoder: Option<LatentDecoder>,
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
            let mut values = crate::floats(x, "samples")?;
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
    fn on_chunk<N: Network, M: Method>(&mut self, trainer: &Trainer<N, M>) -> Result<(), Error> {
        self.terminal.as_mut().map_or(Ok(()), |t| t.on_chunk(trainer))
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

/// A fresh run's configuration written (by the `writer`) with an empty metrics file; a resumed
/// run's compared with the one it was started with. Fails where a fresh run would overwrite a run,
/// or there is nothing to resume. `latest`: the run's newest saved state.
fn start_or_check_config(run: &ImageRun, config: &Value, latest: Option<&Path>, (choice, ranks): (DeviceChoice, usize), writer: bool) -> Result<(), Error> {
    let out = &run.out;
    let config_path = out.join("config.json");
    match (run.resume, latest) {
        (false, Some(dir)) => Err(Error::new(format!(
            "{} already holds a run (newest state {}); pass --resume to continue it, or choose another --out",
            out.display(),
            dir.display()
        ))),
        (true, None) => Err(Error::new(format!("nothing to resume in {}: it has no checkpoints/state-*", out.display()))),
        (true, Some(_)) => {
            let text = std::fs::read_to_string(&config_path).map_err(|e| io_error(&config_path, e))?;
            let saved: Value = serde_json::from_str(&text).map_err(|e| Error::new(format!("{} is damaged: {e}", config_path.display())))?;
            let differ = differences(&saved, config);
            if differ.is_empty() {
                return Ok(());
            }
            Err(Error::new(format!(
                "the run in {} was started with a different {}; resume it with the options it was started with",
                out.display(),
                differ.join(", ")
            )))
        }
        (false, None) if writer => {
            let mut with_device = config.clone();
            with_device["device"] = json!(choice);
            with_device["devices"] = json!(run.devices.len().max(1));
            with_device["ranks"] = json!(ranks);
            write_json(&config_path, &with_device)?;
            std::fs::write(out.join("metrics.jsonl"), "").map_err(|e| io_error(&out.join("metrics.jsonl"), e))?;
            // A session killed before its first state may have left writes half done.
            tidy_interrupted(out, 0)
        }
        (false, None) => Ok(()),
    }
}

/// Continues `trainer` from the saved state in `dir`.
fn load_state<M: Method>(trainer: &mut Trainer<ImageNet, M>, dir: &Path) -> Result<(), Error> {
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
    trainer.resume(net, ema, progress, optimizer)
}

/// A latent model's decoder, with the fingerprint of its VAE for the cards.
type LatentDecoder = (Decoder, String);

/// The run's data, read by every rank (rank 0 first), with the preset it makes (an image folder's
/// classes, the latents' shape), the run's configuration and, for latents, the decoder of its grids.
fn open_data<M: Method + Serialize>(
    preset: &ImagePreset,
    method: &M,
    run: &ImageRun,
    ranks: Option<&dyn Ranks>,
    device: &Device,
    writer: bool,
) -> Result<(ImagePreset, Source, Vec<String>, Value, Option<LatentDecoder>), Error> {
    if let Some(ranks) = ranks {
        // Before anything is read or written: every rank runs the same command.
        let launch = json!({"run": run_config(preset, method), "image_folder": run.image_folder, "data_dir": run.data_dir,
            "out": run.out, "resume": run.resume, "devices": run.devices.len().max(1), "eval_steps": run.steps});
        check_same_config(ranks, &launch)?;
    }
    // Rank 0 reads first: it may download the dataset that the other ranks then read.
    let wait_for_rank_0 = || ranks.map(|r| r.broadcast(&[]));
    if !writer {
        wait_for_rank_0();
    }
    let (preset, source, class_names) = training_data(preset, run, writer)?;
    if writer {
        wait_for_rank_0();
    }
    let mut config = run_config(&preset, method);
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
    Ok((preset, source, class_names, config, decoder))
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
    let (preset, source, class_names, config, decoder) = open_data(preset, &method, run, ranks.as_deref(), device, writer)?;
    let preset = &preset;
    let latest = latest_state(&out.join("checkpoints"));
    let rank_count = ranks.as_ref().map_or(1, |r| r.count());
    start_or_check_config(run, &config, latest.as_ref().map(|(_, dir)| dir.as_path()), (choice, rank_count), writer)?;
    let train = preset.train.clone();
    let Seeds { mut weights, data: seed, .. } = Seeds::new(train.seed);
    let net = preset.net.init(&mut weights, &device.clone().autodiff())?;
    let group = method.group();
    let mut data: Box<dyn Dataset> = match source {
        Source::Images(images) => Box::new(preset.batches(images, seed, group)?),
        Source::Latents(dir, _) => Box::new(preset.latent_batches(LatentData::open(&dir, seed)?.0, group)?),
    };
    let mut trainer = Trainer::new(net, method, train.clone())?;
    if run.devices.len() > 1 {
        trainer = trainer.with_devices(run.devices.iter().map(|d| d.clone().autodiff()).collect())?;
    }
    if let Some(ranks) = ranks {
        trainer = trainer.with_ranks(ranks)?;
    }
    if let Some((_, dir)) = latest.filter(|_| run.resume) {
        load_state(&mut trainer, &dir)?;
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
    let over_ranks = if rank_count > 1 { format!(" over {rank_count} processes") } else { String::new() };
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
