//! The wasm API the page calls (wasm-bindgen). JS does UI only; the maths stays here.

use std::cell::RefCell;
use std::collections::BTreeMap;

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use crate::data::Dataset;
use crate::data::images::{ImageData, gunzip_if_needed, quantize, read_cifar, read_idx_images, read_idx_labels};
use crate::data::toy::{DrawnData, Toy, ToyData};
use crate::evaluation::classifier::Classifier;
use crate::evaluation::energy::energy_distance;
use crate::evaluation::fid::{Gaussian, Moments, Quality, quality};
use crate::io::safetensors::Tensors;
use crate::io::weights::{load_named, named_params_async};
use crate::method::{AnyMethod, Method};
use crate::method::imm::Imm;
use crate::method::precond::Condition;
use crate::networks::Network;
use crate::networks::mlp::Mlp;
use crate::networks::image::ImageNet;
use crate::training::image_model::ImageModel;
use crate::training::presets::{IMAGE_PRESETS, ImagePreset, Preset, image_preset, preset};
use crate::training::trainer::{LOSSES, MAX_BAD_STEPS, MAX_CHUNK, Seeds, Trainer};
use crate::{Error, ErrorKind, Labels, Rng, floats_async};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console)]
    fn error(message: &str);
}

/// Rust panics reach the console as `panicked at ...` (tests watch for it), not as a bare
/// `unreachable` trap.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| error(&info.to_string())));
}

#[cfg(feature = "gpu")]
mod gpu;

/// `initThreadPool(n)` in the threaded build: rayon's pool as `n` web workers; the page awaits it
/// once, before the CPU backend's first step.
#[cfg(feature = "threads")]
pub use wasm_bindgen_rayon::init_thread_pool;

/// The threads of the CPU backend and kernels: rayon's pool (1 in the single-threaded build).
#[wasm_bindgen(js_name = cpuThreads)]
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// An error for JavaScript: an `Error` with the message and a `kind` the worker acts on
/// (`device-lost`, `stopped` or `other`), never a message it has to parse.
fn js(e: Error) -> JsValue {
    let kind = match e.1 {
        ErrorKind::DeviceLost => "device-lost",
        ErrorKind::Stopped => "stopped",
        ErrorKind::Other => "other",
    };
    let error = js_sys::Error::new(&e.0);
    js_sys::Reflect::set(&error, &"kind".into(), &kind.into()).expect("an Error takes properties");
    error.into()
}

fn fail(message: impl Into<String>) -> JsValue {
    js(Error::new(message))
}

/// The device for `backend`: "webgpu" (initialised once) or "cpu" (burn's Flex, inside wasm).
async fn device(backend: &str) -> Result<Device, JsValue> {
    match backend {
        "cpu" => Ok(Device::flex()),
        #[cfg(feature = "gpu")]
        "webgpu" => gpu::webgpu().await,
        #[cfg(not(feature = "gpu"))]
        "webgpu" => Err(fail("this build of the page has no WebGPU (it is the threaded CPU build)")),
        other => Err(fail(format!("unknown backend '{other}' (webgpu or cpu)"))),
    }
}

async fn read<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>, JsValue> {
    floats_async(t, what).await.map_err(js)
}

/// The values of a chunk of training steps.
async fn read_chunk(values: Tensor<1>) -> Result<Vec<f32>, Error> {
    floats_async(values, LOSSES).await
}

/// Seconds, for the metrics records' timing.
fn now() -> f64 {
    js_sys::Date::now() / 1000.0
}

/// Fails, once `trainer`'s numbers were not finite in [`MAX_BAD_STEPS`] steps in a row (which
/// were skipped), with why the page stops training.
fn paused<N: Network, M: Method>(method: &str, trainer: &Trainer<N, M>) -> Result<(), JsValue> {
    match trainer.check_health() {
        Ok(()) => Ok(()),
        Err(_) => Err(js(Error::of_kind(
            ErrorKind::Stopped,
            format!(
                "Training paused: {method}'s loss or a gradient was not finite in {MAX_BAD_STEPS} steps in a row; they \
                 were skipped, so the weights are those of the last good step. Lower the learning rate and press Train \
                 to continue (or Reset to start again)."
            ),
        ))),
    }
}

/// How many training steps fit in a time budget, from the pace of the last call: the page asks
/// for about a quarter of a second at a time, so that Pause answers quickly.
#[derive(Default)]
struct Pace {
    ms_per_step: Option<f64>,
}

impl Pace {
    /// `steps`, or for 0 those that fit in `budget_ms` (one while the pace is unknown), at most
    /// [`MAX_CHUNK`].
    fn steps(&self, steps: u32, budget_ms: f64) -> usize {
        match (steps, self.ms_per_step) {
            (0, None) => 1,
            (0, Some(per)) => (budget_ms / per.max(1e-3)).round().clamp(1.0, MAX_CHUNK as f64) as usize,
            (n, _) => n as usize,
        }
    }

    /// Takes the pace of `steps` that took `seconds`; returns it in milliseconds per step.
    fn took(&mut self, steps: usize, seconds: f64) -> f64 {
        let per = seconds * 1000.0 / steps as f64;
        self.ms_per_step = Some(per);
        per
    }
}

/// Energy distance between two 2D point sets (x, y pairs), the page's quality number.
#[wasm_bindgen(js_name = energyDistance)]
pub fn energy_distance_2d(a: &[f32], b: &[f32]) -> f64 {
    energy_distance(a, b, 2)
}

/// The 2D training data: a toy distribution or points a person drew.
enum PlayData {
    Toy(ToyData),
    Drawn(DrawnData),
}

impl PlayData {
    fn sample(&mut self, n: usize) -> Vec<f32> {
        match self {
            PlayData::Toy(d) => d.sample(n),
            PlayData::Drawn(d) => d.sample(n),
        }
    }
}

/// What the playground accepts, each as [least, most]: the page's inputs take their bounds from
/// here, and larger counts than a page can hold are refused with a message.
#[derive(Serialize)]
struct Limits {
    particles: [usize; 2],
    batch: [usize; 2],
    lr: [f64; 2],
    k: [u32; 2],
    hidden: [usize; 2],
    blocks: [usize; 2],
    /// Points per sampling call, and its steps.
    samples: [usize; 2],
    steps: [usize; 2],
}

const LIMITS: Limits = Limits {
    particles: [1, 16],
    batch: [1, 1 << 16],
    lr: [1e-5, 0.1],
    k: [0, 30],
    hidden: [1, 1024],
    blocks: [1, 8],
    samples: [1, 1 << 20],
    steps: [1, 1024],
};

/// Fails unless `value` is within `[least, most]`.
fn within<T: PartialOrd + std::fmt::Display>(what: &str, value: T, [least, most]: [T; 2]) -> Result<(), Error> {
    if value >= least && value <= most {
        return Ok(());
    }
    Err(Error::new(format!("{what} must be from {least} to {most}, not {value}")))
}

/// The settings a person can change while training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hyper {
    /// IMM's particles per group, M.
    pub particles: usize,
    pub batch: usize,
    pub lr: f64,
    /// IMM's r(s, t) step: (eta(T) - eta(eps)) / 2^k.
    pub k: u32,
}

/// The 2D playground: two methods (IMM and flow matching unless a person picks others), the same
/// MLP from the same initial weights, trained side by side on the same batches of one distribution.
#[wasm_bindgen]
pub struct Playground {
    device: Device,
    preset: Preset,
    data: PlayData,
    seed: u64,
    trainers: [Trainer<Mlp, AnyMethod>; 2],
    hyper: Hyper,
    steps: u64,
    pace: Pace,
}

const WEIGHTS_KIND: &str = "imm-playground-2d";

/// The two methods named in `names` ("imm,fm"), which must differ ([`AnyMethod::named`] knows them).
fn method_pair(names: &str) -> Result<[String; 2], Error> {
    let names: Vec<&str> = names.split(',').map(str::trim).collect();
    let [a, b] = names[..] else {
        return Err(Error::new(format!("the playground trains two methods, not {}", names.len())));
    };
    if a == b {
        return Err(Error::new(format!("pick two different methods (both are '{a}')")));
    }
    Ok([a.to_string(), b.to_string()])
}

/// Both methods' trainers from `seed`'s weights stream ([`Seeds`], as the command line's), with
/// the preset's settings for each method.
fn trainers(preset: &Preset, seed: u64, device: &Device, methods: &[String; 2]) -> Result<[Trainer<Mlp, AnyMethod>; 2], Error> {
    let mut config = preset.train.clone();
    config.seed = seed;
    // Same initial weights for both methods: the difference is the method alone.
    let trainer = |name: &str| {
        let method = AnyMethod::named(name, &preset.imm, &preset.fm, config.total_nimg)?;
        Trainer::new(preset.net.init(&mut Seeds::new(seed).weights, &device.clone().autodiff()), method, config.clone())
    };
    Ok([trainer(&methods[0])?, trainer(&methods[1])?])
}

#[wasm_bindgen]
impl Playground {
    /// A playground on `toy` (a 2D preset name) on `backend` ("webgpu" or "cpu"), with an MLP of
    /// `blocks` residual blocks of width `hidden` (0: the preset's), training the two `methods`
    /// ("imm,fm", see [`Playground::methods`]).
    pub async fn create(toy: String, backend: String, seed: u32, hidden: usize, blocks: usize, methods: String) -> Result<Playground, JsValue> {
        let mut preset = preset(&toy).map_err(js)?;
        let hidden = if hidden == 0 { preset.net.hidden } else { hidden };
        let blocks = if blocks == 0 { preset.net.blocks } else { blocks };
        within("the network's width", hidden, LIMITS.hidden).map_err(js)?;
        within("the network's blocks", blocks, LIMITS.blocks).map_err(js)?;
        let methods = method_pair(&methods).map_err(js)?;
        let device = device(&backend).await?;
        preset.net = preset.net.with_hidden(hidden).with_blocks(blocks);
        let seed = seed as u64;
        let trainers = trainers(&preset, seed, &device, &methods).map_err(js)?;
        let hyper = Hyper { particles: preset.imm.particles, batch: preset.train.batch, lr: preset.train.lr, k: preset.imm.times.k };
        let data = PlayData::Toy(ToyData::new(preset.toy, Seeds::new(seed).data));
        Ok(Playground { device, preset, data, seed, trainers, hyper, steps: 0, pace: Pace::default() })
    }

    /// The methods the playground can train, as JSON `[{name, title}]`.
    pub fn methods() -> String {
        let all: Vec<_> = AnyMethod::NAMES.iter().zip(AnyMethod::TITLES).map(|(name, title)| serde_json::json!({ "name": name, "title": title })).collect();
        serde_json::Value::from(all).to_string()
    }

    /// The two methods being trained, as JSON `[name, name]`.
    #[wasm_bindgen(js_name = getMethods)]
    pub fn get_methods(&self) -> String {
        serde_json::json!(self.trainers.each_ref().map(|t| t.method.name())).to_string()
    }

    /// Names of the toy distributions.
    pub fn toys() -> Vec<String> {
        Toy::ALL.iter().map(|t| t.name().to_string()).collect()
    }

    /// Trains from scratch on the points a person drew (x, y pairs, any units).
    #[wasm_bindgen(js_name = useDrawn)]
    pub fn use_drawn(&mut self, points: &[f32]) -> Result<(), JsValue> {
        self.data = PlayData::Drawn(DrawnData::new(points, self.seed).map_err(js)?);
        self.reset()
    }

    /// Fresh weights and optimizers, keeping the data and the settings.
    pub fn reset(&mut self) -> Result<(), JsValue> {
        self.trainers = trainers(&self.preset, self.seed, &self.device, &self.names()).map_err(js)?;
        self.steps = 0;
        self.apply(&self.hyper.clone()).map_err(js)
    }

    /// The current settings, as JSON `{particles, batch, lr, k}`.
    #[wasm_bindgen(js_name = getHyper)]
    pub fn get_hyper(&self) -> String {
        serde_json::to_string(&self.hyper).expect("settings serialise")
    }

    /// The network's size, as JSON `{hidden, blocks}`.
    #[wasm_bindgen(js_name = getNet)]
    pub fn get_net(&self) -> String {
        serde_json::json!({ "hidden": self.preset.net.hidden, "blocks": self.preset.net.blocks }).to_string()
    }

    /// What the settings, the network and sampling accept, as JSON of [least, most] pairs.
    pub fn limits() -> String {
        serde_json::to_string(&LIMITS).expect("limits serialise")
    }

    /// Changes some or all of the settings from JSON `{particles, batch, lr, k}` (a missing one
    /// keeps its value); training continues with them.
    #[wasm_bindgen(js_name = setHyper)]
    pub fn set_hyper(&mut self, json: &str) -> Result<(), JsValue> {
        let bad = |e: serde_json::Error| fail(format!("bad settings: {e}"));
        let mut merged = serde_json::to_value(&self.hyper).expect("settings serialise");
        let changes: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).map_err(bad)?;
        for (key, value) in changes {
            merged[key] = value;
        }
        let hyper: Hyper = serde_json::from_value(merged).map_err(bad)?;
        self.apply(&hyper).map_err(js)
    }

    fn names(&self) -> [String; 2] {
        self.trainers.each_ref().map(|t| t.method.name().to_string())
    }

    /// Takes the settings `h` (IMM's M and k reach IMM alone), or none of them if a method refuses.
    fn apply(&mut self, h: &Hyper) -> Result<(), Error> {
        within("IMM's particles M", h.particles, LIMITS.particles)?;
        within("the batch", h.batch, LIMITS.batch)?;
        within("the learning rate", h.lr, LIMITS.lr)?;
        within("IMM's k", h.k, LIMITS.k)?;
        let methods = self.trainers.each_ref().map(|t| {
            let mut method = t.method.clone();
            if let AnyMethod::Imm(imm) = &mut method {
                (imm.particles, imm.times.k) = (h.particles, h.k);
            }
            method.check_batch(h.batch).map(|()| method)
        });
        let [a, b] = methods;
        for (trainer, method) in self.trainers.iter_mut().zip([a?, b?]) {
            trainer.method = method;
            (trainer.config.batch, trainer.config.lr) = (h.batch, h.lr);
        }
        self.hyper = h.clone();
        Ok(())
    }

    /// `steps` optimizer steps of each method on the same batches (0: as many as fit in about
    /// `budget_ms`), in chunks of the training loop; returns JSON `{steps, records, ms_per_step}`
    /// with one metrics record per method, in the order of [`Playground::get_methods`] (the time
    /// is both methods').
    pub async fn train(&mut self, steps: u32, budget_ms: f64) -> Result<String, JsValue> {
        let device = self.device.clone().autodiff();
        let start = now();
        for trainer in &mut self.trainers {
            trainer.start_clock(start);
        }
        let steps = self.pace.steps(steps, budget_ms);
        let mut left = steps;
        while left > 0 {
            let (n, batch) = (left.min(MAX_CHUNK), self.hyper.batch);
            let batches: Vec<_> =
                (0..n).map(|_| (Tensor::<2>::from_data(TensorData::new(self.data.sample(batch), [batch, 2]), &device), None)).collect();
            // Both chunks are read at once; a method with a step that was not finite reads again.
            let [a, b] = &mut self.trainers;
            let chunks = [a.launch(batches.clone()), b.launch(batches)];
            let split = chunks[0].values.dims()[0];
            let values = read(Tensor::cat(chunks.each_ref().map(|c| c.values.clone()).to_vec(), 0), LOSSES).await?;
            let [first, second] = chunks;
            for (trainer, chunk, values) in [(a, first, &values[..split]), (b, second, &values[split..])] {
                if let Some(rest) = trainer.settle(chunk, values) {
                    trainer.finish_chunk(rest, read_chunk).await.map_err(js)?;
                }
            }
            self.steps += n as u64;
            left -= n;
            for trainer in &self.trainers {
                paused(trainer.method.title(), trainer)?;
            }
        }
        let end = now();
        let ms_per_step = self.pace.took(steps, end - start);
        let records = self.trainers.each_mut().map(|t| t.record(end));
        Ok(serde_json::json!({ "steps": self.steps, "records": records, "ms_per_step": ms_per_step }).to_string())
    }

    /// `n` data points (x, y pairs) drawn with `seed`, to draw under the samples.
    pub fn data(&self, n: usize, seed: u32) -> Result<Vec<f32>, JsValue> {
        within("the number of points", n, LIMITS.samples).map_err(js)?;
        let mut data = match &self.data {
            PlayData::Toy(d) => PlayData::Toy(ToyData::new(d.toy, seed.into())),
            PlayData::Drawn(d) => PlayData::Drawn(d.clone()),
        };
        Ok(data.sample(n))
    }

    /// Why each method cannot sample with `steps` steps, as JSON `[reason or null, ...]` in the
    /// order of [`Playground::get_methods`] (shortcut models take powers of two only).
    #[wasm_bindgen(js_name = stepsRefused)]
    pub fn steps_refused(&self, steps: usize) -> String {
        serde_json::json!(self.trainers.each_ref().map(|t| t.method.check_steps(steps).err().map(|e| e.0))).to_string()
    }

    /// The sampling paths of both methods' EMA weights from the same `n` noise points (`seed`):
    /// the first method's `steps + 1` states (noise first, samples last), then the second's, each
    /// state `n` x, y pairs; a method that cannot take `steps` steps ([`Playground::steps_refused`])
    /// adds none.
    pub async fn sample(&self, steps: usize, n: usize, seed: u32) -> Result<Vec<f32>, JsValue> {
        within("the number of points", n, LIMITS.samples).map_err(js)?;
        within("the sampling steps", steps, LIMITS.steps).map_err(js)?;
        let mut rng = Rng::new(seed.into());
        let z = rng.normal_vec(n * 2, self.trainers[0].method.sigma_data());
        let z = || Tensor::<2>::from_data(TensorData::new(z.clone(), [n, 2]), &self.device);
        let none = Condition::none();
        let mut out = Vec::with_capacity(2 * (steps + 1) * n * 2);
        for trainer in self.trainers.iter().filter(|t| t.method.check_steps(steps).is_ok()) {
            for state in trainer.method.sample_path(&trainer.ema, z(), &none, steps, &mut rng).map_err(js)? {
                out.extend(read(state, "samples").await?);
            }
        }
        Ok(out)
    }

    /// Both EMA networks as a safetensors file (tensors under each method's name: `imm.*`,
    /// `fm.*`), with what they were trained on.
    #[wasm_bindgen(js_name = saveWeights)]
    pub async fn save_weights(&self) -> Result<Vec<u8>, JsValue> {
        let mut tensors = BTreeMap::new();
        for trainer in &self.trainers {
            for (name, t) in named_params_async(&trainer.ema).await.map_err(js)? {
                tensors.insert(format!("{}.{name}", trainer.method.name()), t);
            }
        }
        let card = serde_json::json!({ "nimg": self.trainers[0].nimg, "hyper": self.hyper, "net": self.preset.net, "methods": self.names() });
        let metadata = BTreeMap::from([("kind".to_string(), WEIGHTS_KIND.to_string()), ("card".to_string(), card.to_string())]);
        Ok(Tensors { tensors, metadata }.to_bytes())
    }

    /// Loads a file of [`Playground::save_weights`] into the methods it holds, which the
    /// playground then trains (continuing from the weights, with fresh optimizer moments); a
    /// wrong or damaged file is refused with the reason.
    #[wasm_bindgen(js_name = loadWeights)]
    pub fn load_weights(&mut self, bytes: &[u8]) -> Result<(), JsValue> {
        let file = Tensors::parse(bytes, "the weights file").map_err(js)?;
        if file.metadata.get("kind").map(String::as_str) != Some(WEIGHTS_KIND) {
            return Err(fail("this is not a weights file of the 2D playground (saved with Save weights)"));
        }
        let card: serde_json::Value = file.metadata.get("card").and_then(|c| serde_json::from_str(c).ok()).unwrap_or_default();
        // Files saved before the page could pick its methods hold IMM and flow matching.
        let names = card["methods"].as_array().map_or("imm,fm".to_string(), |m| m.iter().filter_map(|n| n.as_str()).collect::<Vec<_>>().join(","));
        let methods = method_pair(&names).map_err(|e| fail(format!("the weights file: {}", e.0)))?;
        let mut loaded = trainers(&self.preset, self.seed, &self.device, &methods).map_err(js)?;
        for trainer in &mut loaded {
            let prefix = format!("{}.", trainer.method.name());
            trainer.net = load_named(trainer.net.clone(), &file, &prefix, "the weights file", None).map_err(js)?;
            trainer.ema = load_named(trainer.ema.clone(), &file, &prefix, "the weights file", None).map_err(js)?;
        }
        let previous = std::mem::replace(&mut self.trainers, loaded);
        if let Err(e) = self.apply(&self.hyper.clone()) {
            self.trainers = previous;
            return Err(js(e));
        }
        Ok(())
    }
}

/// An image model on the page: a weights file of `imm train` (its card says how to build and
/// sample it), or a file without a card (an export of the official checkpoint) with its preset.
#[wasm_bindgen(js_name = ImageModel)]
pub struct PageImageModel {
    device: Device,
    model: ImageModel,
    /// The samples of the last grid, in [-1, 1], and their classes, for [`PageImageModel::quality`].
    last: RefCell<(Vec<f32>, Option<Labels>)>,
}

#[wasm_bindgen(js_class = ImageModel)]
impl PageImageModel {
    /// Reads `bytes` on `backend` ("webgpu" or "cpu"); `preset` names the network of a file
    /// without a card ("" when it has one).
    pub async fn load(bytes: Vec<u8>, preset: String, backend: String) -> Result<PageImageModel, JsValue> {
        let device = device(&backend).await?;
        let file = Tensors::parse(&bytes, "the model file").map_err(js)?;
        let preset = match preset.as_str() {
            "" => None,
            name => Some(image_preset(name).ok_or_else(|| {
                fail(format!("unknown image preset '{name}'; available: {}", IMAGE_PRESETS.join(", ")))
            })?),
        };
        let model = ImageModel::load(&file, "the model file", preset.as_ref(), &device).map_err(js)?;
        Ok(PageImageModel { device, model, last: RefCell::default() })
    }

    /// Image presets a file without a card can be read as.
    pub fn presets() -> Vec<String> {
        IMAGE_PRESETS.iter().map(|p| p.to_string()).collect()
    }

    /// JSON `{side, channels, card, data, classes}`: the image size, what the file says about its
    /// training, its dataset when the card names a preset, and its class names (none when
    /// unconditional).
    pub fn describe(&self) -> String {
        let c = &self.model.config;
        let data = self.model.card.as_ref().and_then(|card| card["preset"].as_str()).and_then(image_preset).map(|p| p.data.name());
        let classes = self.model.class_names();
        serde_json::json!({ "side": c.img_resolution(), "channels": c.in_channels(), "card": self.model.card, "data": data, "classes": classes })
            .to_string()
    }

    /// The live quality numbers of the last grid's samples (8-bit, as shown): their classifier
    /// FID against the training split, with what as many real images score, and for a
    /// conditional model the share the classifier puts in the class asked for. `classifier` and
    /// `reference` are the files of `imm classifier`. JSON `{n, fid, real, accuracy}`.
    pub async fn quality(&self, classifier: Vec<u8>, reference: Vec<u8>) -> Result<String, JsValue> {
        let (net, _) = Classifier::from_tensors(&Tensors::parse(&classifier, "the classifier").map_err(js)?, "the classifier", &self.device)
            .map_err(js)?;
        let reference = Tensors::parse(&reference, "the classifier reference").map_err(js)?;
        let gaussian = Gaussian::from_tensors(&reference, "the classifier reference").map_err(js)?;
        let (samples, labels) = self.last.borrow().clone();
        let samples: Vec<f32> = samples.iter().map(|&v| quantize(v)).collect();
        let (c, side) = (self.model.config.in_channels(), self.model.config.img_resolution());
        let n = samples.len() / (c * side * side);
        if c != 1 || side < crate::evaluation::classifier::SIDE || n < 2 {
            return Err(fail("the classifier measures grids of 28 px or larger grey images"));
        }
        let x = Tensor::<4>::from_data(TensorData::new(samples, [n, c, side, side]), &self.device);
        let mut moments = Moments::new(crate::evaluation::classifier::FEATURES);
        let features = net.features(x);
        moments.add(&read(features.clone(), "features").await?);
        let predicted: Option<Vec<usize>> = match &labels {
            Some(_) => Some(read(net.head(features).argmax(1).float(), "predicted classes").await?.into_iter().map(|p| p as usize).collect()),
            None => None,
        };
        let pairs = labels.as_ref().zip(predicted.as_ref()).map(|(l, p)| (l.index(), p.as_slice()));
        let Quality { fid, accuracy } = quality(&moments, &gaussian, pairs).map_err(js)?;
        let floors: serde_json::Value = reference.metadata.get("floors").and_then(|f| serde_json::from_str(f).ok()).unwrap_or_default();
        Ok(serde_json::json!({ "n": n, "fid": fid, "real": floors[n.to_string()], "accuracy": accuracy }).to_string())
    }

    /// About `n` samples in `steps` steps from the prior noise of `seed`, as an RGBA grid with
    /// 1-pixel gaps. `class`: "" or "all" (one row per class), a class index or name, for a
    /// conditional model; `guidance`: the classifier-free guidance scale (1 = none). The same noise
    /// serves every step count, class and guidance ([`ImageModel::grid`]).
    pub async fn sample(&self, steps: usize, n: usize, seed: u32, class: String, guidance: f64) -> Result<Grid, JsValue> {
        within("the number of images", n, [1, MAX_GRID]).map_err(js)?;
        within("the sampling steps", steps, LIMITS.steps).map_err(js)?;
        let class = (!class.is_empty()).then_some(class.as_str());
        // Inside rayon's pool, as `ImageTrainer::train`'s steps.
        let (model, device) = (&self.model, &self.device);
        let grid = rayon::scope(|_| model.grid(n, class, guidance, steps, seed.into(), device)).map_err(js)?;
        let x = read(grid.x, "samples").await?;
        let (c, side) = (self.model.config.in_channels(), self.model.config.img_resolution());
        let n = x.len() / (c * side * side);
        let rgba = rgba_grid(&x, c, side, grid.columns);
        *self.last.borrow_mut() = (x, grid.labels);
        Ok(Grid { width: grid.columns * (side + 1) + 1, n, rgba })
    }
}

/// The most images of one grid, and of one training batch on the page.
const MAX_GRID: usize = 1024;
const MAX_IMAGE_BATCH: usize = 1024;

/// A sampled grid for the page to draw.
#[wasm_bindgen]
pub struct Grid {
    /// Pixels per row.
    #[wasm_bindgen(readonly)]
    pub width: usize,
    /// Samples in it.
    #[wasm_bindgen(readonly)]
    pub n: usize,
    rgba: Vec<u8>,
}

#[wasm_bindgen]
impl Grid {
    /// The RGBA pixels, row by row (moves them out).
    #[wasm_bindgen(js_name = takeRgba)]
    pub fn take_rgba(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rgba)
    }
}

/// The presets a person trains in the tab on the MNIST images the page carries.
const PAGE_TRAINED: [&str; 2] = ["mnist-tiny", "mnist-cond-tiny"];

/// Image training on the page: an image preset's network trained with IMM on an IDX file (the
/// page packs a subset of MNIST), on the page's device. Its EMA weights are sampled through
/// [`PageImageModel`], like a loaded model.
#[wasm_bindgen]
pub struct ImageTrainer {
    device: Device,
    preset: ImagePreset,
    trainer: Trainer<ImageNet, Imm>,
    data: ImageData,
    pace: Pace,
}

#[wasm_bindgen]
impl ImageTrainer {
    /// `images`: an IDX image file (gzipped or not) or CIFAR-10 binary batches, concatenated;
    /// `labels`: the IDX label file of the images, for a conditional preset (CIFAR-10 records
    /// carry their own; empty otherwise);
    /// `preset`: the network and method settings;
    /// `batch`: images per step (a multiple of M; 0: the preset's).
    pub async fn create(images: Vec<u8>, labels: Vec<u8>, preset: String, backend: String, batch: usize, seed: u32) -> Result<ImageTrainer, JsValue> {
        let device = device(&backend).await?;
        let mut preset = image_preset(&preset)
            .ok_or_else(|| fail(format!("unknown image preset '{preset}'; available: {}", IMAGE_PRESETS.join(", "))))?;
        let batch = if batch == 0 { preset.train.batch } else { batch };
        within("the batch", batch, [1, MAX_IMAGE_BATCH]).map_err(js)?;
        preset.train.batch = batch;
        preset.train.seed = seed.into();
        let bytes = gunzip_if_needed(images, "the training images").map_err(js)?;
        // IDX files start with their magic number; CIFAR-10 batches are bare records.
        let mut images = if bytes.starts_with(&[0, 0, 8, 3]) {
            read_idx_images(&bytes, "the training images")
        } else {
            read_cifar(&bytes, "the chosen CIFAR-10 data")
        }
        .map_err(js)?;
        let set = preset.data.images().ok_or_else(|| fail(format!("{} trains on VAE latents, which the page does not make", preset.name)))?;
        let (channels, side) = set.shape();
        if (images.channels, images.side) != (channels, side) {
            return Err(fail(format!("{} trains on {channels} x {side} x {side} images", preset.name)));
        }
        if !labels.is_empty() {
            let labels = read_idx_labels(&gunzip_if_needed(labels, "the training labels").map_err(js)?, "the training labels").map_err(js)?;
            images = images.with_labels(labels).map_err(js)?;
        }
        let Seeds { mut weights, data, .. } = Seeds::new(seed.into());
        let data = preset.batches(images, data, preset.imm.group()).map_err(|e| fail(format!("{}: {e}", preset.name)))?;
        let net = preset.net.init(&mut weights, &device.clone().autodiff()).map_err(js)?;
        let trainer = Trainer::new(net, preset.imm.clone(), preset.train.clone()).map_err(js)?;
        Ok(ImageTrainer { device, preset, trainer, data, pace: Pace::default() })
    }

    /// The networks the page trains on its MNIST images, with how they train: JSON
    /// `[{name, conditional, method, particles, k, batch}]`.
    pub fn presets() -> String {
        let presets: Vec<_> = PAGE_TRAINED
            .iter()
            .map(|name| image_preset(name).expect("the page trains known presets"))
            .map(|p| {
                serde_json::json!({
                    "name": p.name, "conditional": p.net.classes() > 0, "method": "IMM",
                    "particles": p.imm.particles, "k": p.imm.times.k, "batch": p.train.batch,
                })
            })
            .collect();
        serde_json::to_string(&presets).expect("presets serialise")
    }

    /// `steps` optimizer steps (0: as many as fit in about `budget_ms`) in chunks of the training
    /// loop; returns the metrics record (JSON) with `ms_per_step`.
    pub async fn train(&mut self, steps: u32, budget_ms: f64) -> Result<String, JsValue> {
        let (batch, dim) = (self.trainer.config.batch, self.data.dim());
        let device = self.device.clone().autodiff();
        let start = now();
        self.trainer.start_clock(start);
        let steps = self.pace.steps(steps, budget_ms);
        let mut left = steps;
        while left > 0 {
            let n = left.min(MAX_CHUNK);
            let (trainer, data) = (&mut self.trainer, &mut self.data);
            // The steps run inside rayon's pool: its threads then share each parallel loop among
            // themselves, instead of waking this thread after every one (slow across web workers).
            let chunk = rayon::scope(|_| {
                let batches = (0..n)
                    .map(|_| {
                        let (x, y) = data.sample_labelled(batch);
                        (Tensor::<2>::from_data(TensorData::new(x, [batch, dim]), &device), y)
                    })
                    .collect();
                trainer.launch(batches)
            });
            trainer.finish_chunk(chunk, read_chunk).await.map_err(js)?;
            left -= n;
            paused("IMM", &self.trainer)?;
        }
        let end = now();
        let mut record = serde_json::to_value(self.trainer.record(end)).expect("metrics serialise");
        record["ms_per_step"] = self.pace.took(steps, end - start).into();
        Ok(record.to_string())
    }

    /// The EMA weights so far, as a model to sample.
    pub fn model(&self) -> PageImageModel {
        let card = serde_json::json!({ "preset": self.preset.name, "method": "imm", "nimg": self.trainer.nimg, "trained": "on this page" });
        let model = ImageModel {
            config: self.preset.net.clone(),
            net: self.trainer.ema.clone(),
            method: AnyMethod::Imm(self.trainer.method.clone()),
            card: Some(card),
        };
        PageImageModel { device: self.device.clone(), model, last: RefCell::default() }
    }
}

/// Images [N, C, side, side] in [-1, 1] as an RGBA grid, `columns` per row, 1-pixel white gaps.
fn rgba_grid(images: &[f32], c: usize, side: usize, columns: usize) -> Vec<u8> {
    let n = images.len() / (c * side * side);
    let rows = n.div_ceil(columns);
    let (width, height) = (columns * (side + 1) + 1, rows * (side + 1) + 1);
    let mut out = vec![255u8; width * height * 4];
    let byte = |v: f32| ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8;
    for (i, image) in images.chunks_exact(c * side * side).enumerate() {
        let (x0, y0) = (1 + (i % columns) * (side + 1), 1 + (i / columns) * (side + 1));
        for y in 0..side {
            for x in 0..side {
                let at = (((y0 + y) * width) + x0 + x) * 4;
                for ch in 0..3 {
                    out[at + ch] = byte(image[(ch.min(c - 1) * side + y) * side + x]);
                }
            }
        }
    }
    out
}
