//! The native commands: train one method on a preset, or the default demo comparing IMM with flow
//! matching. Writes config.json, metrics.jsonl, eval.json and samples.png per run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, DeviceKind, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::json;

use crate::data2d::{Dataset, ToyData};
use crate::eval::energy_distance;
use crate::network::Network;
use crate::plot::{Panel, scatter_grid};
use crate::presets::Preset;
use crate::safetensors::Tensors;
use crate::trainer::{Method, Metrics, Observer, Trainer, fit};
use crate::weights::named_params;
use crate::{Error, Rng};

/// Where tensors live; chosen at run time, never by editing code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum DeviceChoice {
    /// A GPU when one is found (CUDA in a build with it, else wgpu), else the CPU.
    Auto,
    /// burn's Flex backend on the CPU (fastest for the small 2D networks).
    Cpu,
    /// wgpu on the best adapter found (Vulkan, Metal, DX12), a software one included.
    Wgpu,
    /// An NVIDIA GPU through CUDA (builds with `--features cuda`).
    Cuda,
}

impl DeviceChoice {
    /// The device, and the choice `Auto` resolved to. wgpu can be initialised once per process, so
    /// call this once.
    pub fn device(self) -> Result<(Device, DeviceChoice), Error> {
        match self {
            DeviceChoice::Auto => {
                // CUDA when this build has it and the machine has an NVIDIA driver and the toolkit's headers.
                if std::path::Path::new("/dev/nvidiactl").exists()
                    && let Ok(device) = cuda(0)
                {
                    return Ok((device, DeviceChoice::Cuda));
                }
                for kind in [DeviceKind::DiscreteGpu(0), DeviceKind::IntegratedGpu(0)] {
                    if let Ok(device) = Device::wgpu_options().device_kind(kind).init() {
                        return Ok((device, DeviceChoice::Wgpu));
                    }
                }
                Ok((Device::flex(), DeviceChoice::Cpu))
            }
            DeviceChoice::Cpu => Ok((Device::flex(), self)),
            DeviceChoice::Wgpu => Device::wgpu_options()
                .init()
                .map(|device| (device, self))
                .map_err(|e| Error::new(format!("no usable wgpu adapter ({e}); try --device cpu"))),
            DeviceChoice::Cuda => cuda(0).map(|device| (device, self)),
        }
    }
}

#[cfg(feature = "cuda")]
fn cuda(index: usize) -> Result<Device, Error> {
    // cubecl-cuda panics without a CUDA include directory; say so before it does.
    let include = ["CUDA_PATH", "CUDA_HOME"].iter().filter_map(std::env::var_os).map(std::path::PathBuf::from).chain([std::path::PathBuf::from("/usr/local/cuda")]);
    if !include.into_iter().any(|dir| dir.join("include/crt/mma.h").exists()) {
        return Err(Error::new("--device cuda needs the CUDA toolkit's headers: set CUDA_PATH to a directory with include/crt/mma.h"));
    }
    Ok(Device::cuda(index))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_index: usize) -> Result<Device, Error> {
    Err(Error::new("this build has no CUDA: build with `cargo run --release --features cuda -- ...` (or use --device wgpu)"))
}

impl DeviceChoice {
    /// `n` devices of this kind for data-parallel training: GPUs 0 to n - 1 through wgpu, or the
    /// CPU n times (one device in fact; useful for checking the split).
    pub fn devices(self, n: usize) -> Result<(Vec<Device>, DeviceChoice), Error> {
        let (first, choice) = self.device()?;
        if n <= 1 {
            return Ok((vec![first], choice));
        }
        let mut devices = vec![first];
        for i in 1..n {
            let device = match choice {
                DeviceChoice::Cpu => Device::flex(),
                DeviceChoice::Cuda => cuda(i)?,
                _ => Device::wgpu_options()
                    .device_kind(DeviceKind::DiscreteGpu(i))
                    .init()
                    .map_err(|e| Error::new(format!("--devices {n}: no GPU {i} ({e}); this machine has {i}")))?,
            };
            devices.push(device);
        }
        Ok((devices, choice))
    }
}

/// What to evaluate after training.
#[derive(Clone, Debug, Serialize)]
pub struct EvalOptions {
    /// Sampling step counts.
    pub steps: Vec<usize>,
    /// Generated and held-out points per energy distance.
    pub samples: usize,
}

/// The outcome of one training run.
pub struct Outcome {
    pub method: &'static str,
    pub floor: f64,
    /// Energy distance by number of sampling steps.
    pub energy: BTreeMap<usize, f64>,
    pub samples: BTreeMap<usize, Vec<f32>>,
    pub held_out: Vec<f32>,
    pub seconds: f64,
}

const HELD_OUT_SEED: u64 = 0x4e1d;

pub(crate) fn io_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(format!("cannot write {}: {e}", path.display()))
}

pub fn write_json(path: &Path, value: &impl Serialize) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| io_error(path, e))?;
    std::fs::write(path, text + "\n").map_err(|e| io_error(path, e))
}

/// Creates `dir` and checks that files can be written there.
pub fn prepare_dir(dir: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::new(format!("cannot create output directory {}: {e}", dir.display())))?;
    let probe = dir.join(".write-test");
    File::create(&probe).map_err(|e| Error::new(format!("output directory {} is not writable: {e}", dir.display())))?;
    std::fs::remove_file(&probe).map_err(|e| io_error(&probe, e))
}

/// Held-out data of the preset's distribution and the energy-distance floor: the distance between
/// two independent samples of that size.
pub fn held_out(preset: &Preset, n: usize) -> (Vec<f32>, f64) {
    let mut data = ToyData::new(preset.toy, HELD_OUT_SEED);
    let (a, b) = (data.sample(n), data.sample(n));
    let floor = energy_distance(&a, &b, 2);
    (a, floor)
}

/// Progress bar, terminal lines and metrics.jsonl: what every run shows and keeps.
pub struct Terminal {
    bar: ProgressBar,
    metrics: File,
    metrics_path: PathBuf,
    label: &'static str,
}

impl Terminal {
    /// Appends to `metrics_path` (a resumed run continues its file).
    pub fn new(label: &'static str, total_nimg: u64, metrics_path: PathBuf) -> Result<Self, Error> {
        let bar = ProgressBar::new(total_nimg);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>4} [{bar:32}] {human_pos}/{human_len} img  {elapsed} < {eta}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(label);
        let metrics = File::options()
            .create(true)
            .append(true)
            .open(&metrics_path)
            .map_err(|e| io_error(&metrics_path, e))?;
        Ok(Self { bar, metrics, metrics_path, label })
    }

    pub fn println(&self, line: &str) {
        // A hidden bar (output not a terminal) drops its println: logs still get the line.
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Observer for Terminal {
    fn on_step<N: Network, M: Method>(&mut self, trainer: &Trainer<N, M>) -> Result<(), Error> {
        self.bar.set_position(trainer.nimg);
        Ok(())
    }

    fn on_log(&mut self, record: &Metrics) -> Result<(), Error> {
        let line = format!(
            "{:>4}  nimg {:>9}  loss {:.5}  {:.3} s/kimg",
            self.label, record.nimg, record.loss, record.sec_per_kimg
        );
        self.println(&line);
        let line = serde_json::to_string(record).expect("metrics serialise");
        writeln!(self.metrics, "{line}").map_err(|e| io_error(&self.metrics_path, e))
    }
}

/// Samples `n` points at each step count, all from the same prior noise.
pub fn sample_steps<N: Network, M: Method>(
    method: &M,
    net: &N,
    steps: &[usize],
    n: usize,
    seed: u64,
    device: &Device,
) -> Result<BTreeMap<usize, Vec<f32>>, Error> {
    let mut rng = Rng::new(seed);
    let z = rng.normal_vec(n * 2, method.sigma_data());
    let mut out = BTreeMap::new();
    for &k in steps {
        let z = Tensor::<2>::from_data(TensorData::new(z.clone(), [n, 2]), device);
        let x = method.sample(net, z, k, &mut rng)?;
        let values = x.into_data().try_into_vec::<f32>().map_err(|e| Error::new(format!("reading samples: {e:?}")))?;
        out.insert(k, values);
    }
    Ok(out)
}

/// Trains `method` on the preset's data, then evaluates the EMA weights and writes the run's files.
pub fn train_and_evaluate<M: Method + Serialize + Clone + Send>(
    preset: &Preset,
    method: M,
    (device, device_choice): (&Device, DeviceChoice),
    eval: &EvalOptions,
    out: &Path,
) -> Result<Outcome, Error> {
    prepare_dir(out)?;
    let config = json!({
        "preset": preset.name,
        "data": preset.toy,
        "method": method.name(),
        "method_config": method,
        "net": preset.net,
        "train": preset.train,
        "eval": eval,
        "device": device_choice,
    });
    write_json(&out.join("config.json"), &config)?;

    let train = preset.train.clone();
    // Independent streams for the initial weights and the data, both from the run's seed.
    let mut seeds = Rng::new(train.seed);
    let net = preset.net.init(&mut seeds.fork(), &device.clone().autodiff());
    let mut data = ToyData::new(preset.toy, seeds.next_u64());
    let label = method.name();
    let mut trainer = Trainer::new(net, method.clone(), train.clone())?;

    let metrics_path = out.join("metrics.jsonl");
    // A fresh 2D run replaces the metrics of an earlier one in the same place.
    File::create(&metrics_path).map_err(|e| io_error(&metrics_path, e))?;
    let mut terminal = Terminal::new(label, train.total_nimg, metrics_path)?;
    let start = Instant::now();
    // The 2D MLP's ops are too small for the CPU backend's threads: one thread trains it ~25% faster.
    let one_thread = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::new(format!("cannot start a worker thread: {e}")))?;
    let result = one_thread.install(|| fit(&mut trainer, &mut data, || start.elapsed().as_secs_f64(), &mut terminal));
    terminal.finish();
    result?;
    let seconds = start.elapsed().as_secs_f64();

    // The EMA weights with a card, as image snapshots have: what `imm eval` reads.
    let mut snapshot = Tensors { tensors: named_params(&trainer.ema), ..Default::default() };
    let card = json!({"preset": preset.name, "net": preset.net, "method": label, "method_config": method, "nimg": trainer.nimg});
    snapshot.metadata.insert("imm".into(), card.to_string());
    let snapshot_path = out.join("ema.safetensors");
    std::fs::write(&snapshot_path, snapshot.to_bytes()).map_err(|e| io_error(&snapshot_path, e))?;

    let (held_out, floor) = held_out(preset, eval.samples);
    let samples = sample_steps(&trainer.method, &trainer.ema, &eval.steps, eval.samples, seeds.next_u64(), device)?;
    let energy: BTreeMap<usize, f64> =
        samples.iter().map(|(&k, x)| (k, energy_distance(x, &held_out, 2))).collect();
    let by_steps: BTreeMap<String, f64> = energy.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    write_json(
        &out.join("eval.json"),
        &json!({"metric": "energy_distance", "floor": floor, "steps": by_steps, "train_seconds": seconds,
                "nimg": trainer.nimg, "params": trainer.ema.num_params()}),
    )?;
    let outcome = Outcome { method: label, floor, energy, samples, held_out, seconds };
    scatter_grid(&[panels(&outcome)], &out.join("samples.png"))?;
    Ok(outcome)
}

/// A row of panels: the held-out data, then the samples at each step count over it.
pub fn panels(outcome: &Outcome) -> (String, Vec<Panel>) {
    let color = if outcome.method == "imm" { [31, 119, 180] } else { [230, 120, 20] };
    let mut row = vec![Panel {
        title: "data".into(),
        background: Vec::new(),
        points: outcome.held_out.clone(),
        color: [90, 90, 90],
    }];
    for (k, points) in &outcome.samples {
        row.push(Panel {
            title: format!("{k} step{} ed {:.4}", if *k == 1 { "" } else { "s" }, outcome.energy[k]),
            background: outcome.held_out.clone(),
            points: points.clone(),
            color,
        });
    }
    (outcome.method.to_uppercase(), row)
}

/// The default demo: IMM and flow matching with the same budget on one preset; prints a table and
/// writes `out/eval.json`, `out/samples.png` and one folder per method.
pub fn demo(preset: &Preset, choice: DeviceChoice, eval: &EvalOptions, out: &Path) -> Result<(), Error> {
    prepare_dir(out)?;
    let (device, choice) = choice.device()?;
    println!(
        "Training IMM and flow matching on '{}' for {} images each (batch {}) on {:?}.",
        preset.name, preset.train.total_nimg, preset.train.batch, choice
    );
    let imm = train_and_evaluate(preset, preset.imm.clone(), (&device, choice), eval, &out.join("imm"))?;
    let fm = train_and_evaluate(preset, preset.fm.clone(), (&device, choice), eval, &out.join("fm"))?;
    let as_map = |o: &Outcome| -> BTreeMap<String, f64> { o.energy.iter().map(|(k, v)| (k.to_string(), *v)).collect() };
    write_json(
        &out.join("eval.json"),
        &json!({"metric": "energy_distance", "floor": imm.floor, "imm": as_map(&imm), "fm": as_map(&fm)}),
    )?;
    scatter_grid(&[panels(&imm), panels(&fm)], &out.join("samples.png"))?;

    println!("\nEnergy distance to held-out data (lower is better; floor = two data samples: {:.5})", imm.floor);
    println!("{:>6}  {:>10}  {:>10}  {:>8}", "steps", "IMM", "FM", "FM/IMM");
    for (k, e) in &imm.energy {
        println!("{k:>6}  {e:>10.5}  {:>10.5}  {:>8.1}", fm.energy[k], fm.energy[k] / e);
    }
    println!(
        "\nTraining took {:.0} s (IMM) and {:.0} s (FM). Wrote {}/eval.json and {}/samples.png.",
        imm.seconds,
        fm.seconds,
        out.display(),
        out.display()
    );
    Ok(())
}
