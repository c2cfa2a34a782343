//! The command line: it parses the arguments, calls one function of the layers below per command
//! and prints what it returns.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::bench;
use crate::data::images::{ImageSet, LabelDraw};
use crate::evaluation::pipeline::{EvalRequest, Metric, evaluate, print_report};
use crate::evaluation::toy::{EvalOptions, demo, train_and_evaluate};
use crate::training::encode::{EncodeRequest, encode};
use crate::training::run::{ImageRun, train_images};
use crate::training::run_dir::write_json;
use crate::training::sample::{SampleRequest, export, sample};
use crate::{DeviceChoice, Error};
use crate::io::safetensors::Tensors;
use crate::method::precond::TimeInput;
use crate::method::sampler::{Grid, Sampler};
use crate::method::{AnyMethod, Method, flow_matching::FlowMatching, imm::Imm};
use crate::networks::Precision;
use crate::training::image_model::ImageModel;
use crate::training::presets::{IMAGE_PRESETS, ImagePreset, Preset, image_preset, names, preset};
use crate::training::ranks::{Ranks, launched_local_rank, launched_rank, launched_ranks};
use crate::training::trainer::TrainConfig;

/// Inductive Moment Matching: one- and few-step generative models trained from scratch.
#[derive(Parser)]
#[command(name = "imm", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Train IMM and flow matching on one preset with the same budget and compare them at 1, 2, 4
    /// and 8 sampling steps (what `imm` with no arguments runs).
    Demo {
        /// Preset to train on.
        #[arg(long, default_value = "checkerboard")]
        preset: String,
        /// Output directory.
        #[arg(long, default_value = "runs/default")]
        out: PathBuf,
        #[command(flatten)]
        options: Options,
    },
    /// Train one method on a preset: 2D presets are then evaluated and plotted; image presets
    /// write sample grids, EMA snapshots and resumable states as they go.
    Train {
        /// Preset to train on (see `imm presets`).
        #[arg(long)]
        preset: String,
        /// Training method.
        #[arg(long, value_enum, default_value_t = MethodName::Imm)]
        method: MethodName,
        /// Output directory [default: runs/PRESET-METHOD].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Image presets: where the dataset files are (default: data/NAME, then the offline packages).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Latent presets: the VAE the latents were encoded with; it decodes the sample grids.
        #[arg(long)]
        vae: Option<PathBuf>,
        /// Image presets: train on your own PNG / JPEG images instead, one sub-folder per class
        /// (cropped and resized to the preset's side); a conditional preset takes its classes.
        #[arg(long)]
        image_folder: Option<PathBuf>,
        /// Conditional image presets: which images of a batch share a class label
        /// [default: the preset's].
        #[arg(long, value_enum)]
        labels: Option<LabelDraw>,
        /// Image presets: continue the run in --out from its newest saved state.
        #[arg(long)]
        resume: bool,
        /// Image presets: split each batch into this many parts (same update, less memory).
        #[arg(long, allow_negative_numbers = true, value_parser = positive_usize)]
        accumulate: Option<usize>,
        /// Image presets: train data-parallel over this many GPUs (0 to N-1) of --device's kind.
        #[arg(long, allow_negative_numbers = true, value_parser = positive_usize)]
        devices: Option<usize>,
        /// Image presets: the dtype of the network's convolutions, linear layers and attention
        /// products; weights, time maths, the target pass and the MMD stay f32.
        #[arg(long, value_enum)]
        precision: Option<Precision>,
        /// Image presets: write a sample grid, an EMA snapshot and a resumable state every this many
        /// thousand images [default: the preset's].
        #[arg(long, allow_negative_numbers = true, value_parser = positive_f64)]
        snapshot_kimg: Option<f64>,
        #[command(flatten)]
        options: Options,
    },
    /// Sample a trained image model into a PNG grid, or an .npz (uint8 [N, H, W, C]) for FID tools.
    Sample {
        /// Weights: an EMA snapshot of `imm train`, or safetensors under the official names.
        #[arg(long)]
        weights: PathBuf,
        /// The image preset the weights belong to, when the file does not say (an exported checkpoint).
        #[arg(long)]
        preset: Option<String>,
        /// Sampling steps.
        #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = positive_usize)]
        steps: usize,
        /// Sampler: pushforward or restart (IMM), euler or heun (flow matching) [default: the one the
        /// model was trained with].
        #[arg(long, value_enum)]
        sampler: Option<Sampler>,
        /// Sampling times: uniform, edm, or eta:V1,... (the paper's CIFAR-10 2 steps: eta:1.4).
        #[arg(long, value_parser = grid)]
        grid: Option<Grid>,
        /// Seed of the prior noise: the same seed gives the same noise at every step count.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Number of samples.
        #[arg(long, default_value_t = 100, allow_negative_numbers = true, value_parser = positive_usize)]
        n: usize,
        /// Output file: .png for a grid, .npz for the images.
        #[arg(long, default_value = "samples.png")]
        out: PathBuf,
        /// A latent model: the VAE its latents were encoded with, which decodes the samples.
        #[arg(long)]
        vae: Option<PathBuf>,
        #[command(flatten)]
        condition: Conditioning,
        /// Compute device.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Measure an image model's FID at several step counts against its training set (statistics
    /// cached after the first run).
    Eval {
        /// Weights: an EMA snapshot of `imm train`, or safetensors under the official names.
        #[arg(long)]
        weights: PathBuf,
        /// The image preset the weights belong to, when the file does not say.
        #[arg(long)]
        preset: Option<String>,
        /// Sampling step counts, comma-separated.
        #[arg(long, default_value = "1,2,4,8", allow_hyphen_values = true, value_parser = step_list)]
        steps: StepList,
        /// Sampler: pushforward or restart (IMM), euler or heun (flow matching) [default: the one the
        /// model was trained with].
        #[arg(long, value_enum)]
        sampler: Option<Sampler>,
        /// Sampling times: uniform, edm, or eta:V1,... (the paper's CIFAR-10 2 steps: eta:1.4).
        #[arg(long, value_parser = grid)]
        grid: Option<Grid>,
        /// Samples per step count (the paper: 50000).
        #[arg(long, default_value_t = 10_000, allow_negative_numbers = true, value_parser = positive_usize)]
        n: usize,
        /// Features [default: classifier for MNIST and Fashion-MNIST, inception otherwise].
        #[arg(long, value_enum)]
        metric: Option<Metric>,
        /// The classifier for --metric classifier [default: www/models/classifier-SET.safetensors].
        #[arg(long)]
        classifier: Option<PathBuf>,
        /// Where the dataset files are (default: data/NAME, then the offline packages).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seed of the prior noise (the same noise at every step count).
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Also write the report here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Compare with these real images instead: an image folder (cropped as for training;
        /// statistics cached) or an .npz of Inception statistics `mu` and `sigma` (ADM's
        /// reference batches). Needed for latent and image-folder models.
        #[arg(long = "ref")]
        reference: Option<PathBuf>,
        /// A latent model: the VAE its latents were encoded with, which decodes the samples.
        #[arg(long)]
        vae: Option<PathBuf>,
        #[command(flatten)]
        condition: Conditioning,
        /// Compute device.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Train the small MNIST / Fashion-MNIST classifier whose features `imm eval` and the page use.
    Classifier {
        /// Dataset.
        #[arg(long, value_enum)]
        data: DataName,
        /// Passes over the training split.
        #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = positive_usize)]
        epochs: usize,
        /// Output file [default: www/models/classifier-SET.safetensors].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the dataset files are.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Seed of the shuffles.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Keep the classifier already at --out and only write its reference file.
        #[arg(long)]
        keep: bool,
        /// Compute device.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// Encode an image folder (one sub-folder per class) with the Stable Diffusion VAE into shards
    /// of latent posteriors with labels, for latent training; run it again to continue.
    Encode {
        /// The image folder.
        #[arg(long)]
        data: PathBuf,
        /// The VAE: diffusers' AutoencoderKL safetensors (stabilityai/sd-vae-ft-ema's
        /// diffusion_pytorch_model.safetensors); a config.json beside it gives its group count.
        #[arg(long)]
        vae: PathBuf,
        /// Output folder for the shards and their manifest (latents.json).
        #[arg(long)]
        out: PathBuf,
        /// Side of the square each image is centre-cropped and resized to.
        #[arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = positive_usize)]
        resolution: usize,
        /// Also encode each image mirrored left to right.
        #[arg(long)]
        xflip: bool,
        /// Images per VAE call.
        #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = positive_usize)]
        batch: usize,
        /// Images per shard.
        #[arg(long, default_value_t = 4096, allow_negative_numbers = true, value_parser = positive_usize)]
        shard_images: usize,
        /// The VAE's compute dtype [default: f16 (as the official code) on a GPU that has it, else f32].
        #[arg(long, value_enum)]
        precision: Option<Precision>,
        /// Compute device.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
        device: DeviceChoice,
    },
    /// Rewrite a weights file in f16, keeping its card: half the size, for the page.
    Export {
        /// Weights to convert.
        #[arg(long)]
        weights: PathBuf,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
    /// List the presets.
    Presets,
    /// Print speed figures.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
    /// Check the network, losses, gradients, time maths and samplers against a golden file of the
    /// official code (layout: shared/golden/README.md; manifest: same stem, .json).
    Golden {
        /// The golden .safetensors file.
        file: PathBuf,
        /// Compute device.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Training speed: images per second of an image preset's network and method at a batch size
    /// (random images; two warm-up steps, then --iters timed ones).
    Train {
        /// Image preset.
        #[arg(long, default_value = "cifar10-paper")]
        preset: String,
        /// Training method.
        #[arg(long, value_enum, default_value_t = MethodName::Imm)]
        method: MethodName,
        /// Batch size [default: the preset's].
        #[arg(long, allow_negative_numbers = true, value_parser = positive_usize)]
        batch: Option<usize>,
        /// Split each batch into this many parts.
        #[arg(long, allow_negative_numbers = true, value_parser = positive_usize)]
        accumulate: Option<usize>,
        /// Data-parallel over this many devices of --device's kind, as `train --devices`.
        #[arg(long, default_value_t = 1, allow_negative_numbers = true, value_parser = positive_usize)]
        devices: usize,
        #[command(flatten)]
        timing: Timing,
    },
    /// Sampling speed: latency per batch and images per second at each batch size and step count.
    Sample {
        /// Image preset (its network with fresh weights, unless --weights).
        #[arg(long, default_value = "cifar10-paper")]
        preset: String,
        /// Weights to sample instead (their card says the network).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// Batch sizes, comma-separated.
        #[arg(long, default_value = "1,64,256", value_parser = step_list)]
        batches: StepList,
        /// Step counts, comma-separated.
        #[arg(long, default_value = "1,2,4,8", value_parser = step_list)]
        steps: StepList,
        #[command(flatten)]
        timing: Timing,
    },
    /// What a step costs a GPU device: kernel launches and buffer reservations of a training step
    /// and a one-step sampling call, counted by the runtime, and the training loop's host reads
    /// (device to host) per step, for the page's 2D MLP (IMM and flow matching) and image presets
    /// (IMM).
    Launches {
        /// Image presets and their batch sizes, as PRESET:BATCH, comma-separated.
        #[arg(long, default_value = "mnist-tiny:16,cifar10-paper:8")]
        presets: String,
        /// Also list each row's N most launched kernels.
        #[arg(long, default_value_t = 0)]
        top: usize,
        /// Also write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Compute device (wgpu or cuda: the counts come from cubecl's runtime).
        #[arg(long, value_enum, default_value_t = DeviceChoice::Wgpu)]
        device: DeviceChoice,
    },
    /// Under `mpirun` (a build with `--features mpi`): the all-reduce that sums gradients over the
    /// ranks, timed at the gradient sizes of image presets, with the host staging it adds to a step.
    Allreduce {
        /// Image presets, comma-separated.
        #[arg(long, default_value = "mnist-tiny,cifar10-paper")]
        presets: String,
        /// Timed repetitions (after one warm-up).
        #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = positive_usize)]
        iters: usize,
        /// Also write the figures here as JSON (rank 0).
        #[arg(long)]
        json: Option<PathBuf>,
        /// The device whose memory the gradients are staged from.
        #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
        device: DeviceChoice,
    },
    /// The fused WGSL MMD against the reference tensor ops: checks their agreement, then times
    /// forward + backward of both (default: the paper's CIFAR-10 batch, B = 4096 as 1024 x 4).
    Mmd {
        /// Groups, G.
        #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = positive_usize)]
        groups: usize,
        /// Particles per group, M (1 to 16).
        #[arg(long, default_value_t = 4, allow_negative_numbers = true, value_parser = positive_usize)]
        particles: usize,
        /// Dimension of a particle, D (3072 for 32 x 32 RGB).
        #[arg(long, default_value_t = 3072, allow_negative_numbers = true, value_parser = positive_usize)]
        dim: usize,
        /// Timed repetitions.
        #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = positive_usize)]
        iters: usize,
        /// Also write the figures here as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Compute device (the fused kernels run on wgpu and CUDA).
        #[arg(long, value_enum, default_value_t = DeviceChoice::Wgpu)]
        device: DeviceChoice,
    },
}

/// How `bench train` and `bench sample` measure and report.
#[derive(Args)]
struct Timing {
    /// The network's compute dtype, as `train --precision`.
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    precision: Precision,
    /// Timed repetitions (after two warm-up ones).
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = positive_usize)]
    iters: usize,
    /// Also write the figures here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,
}

#[derive(Clone, Copy, ValueEnum)]
enum DataName {
    Mnist,
    FashionMnist,
}

#[derive(Clone, Copy, ValueEnum)]
enum MethodName {
    /// Inductive Moment Matching.
    Imm,
    /// Conditional flow matching (the baseline), sampled with Euler steps or `--sampler heun`.
    Fm,
    /// MeanFlow (Geng et al. 2025) on the same network: the mean velocity over [r, t].
    Meanflow,
    /// Consistency training (ECT / iCT) on the same network: the one-step map at two times.
    Ct,
    /// Shortcut models (Frans et al. 2024) on the same network: the step size as an input.
    Shortcut,
}

impl MethodName {
    /// The method with a preset's settings (the other methods' from their papers, on flow
    /// matching's network and times) for a run of `total_nimg` images.
    fn with(self, imm: &Imm, fm: &FlowMatching, total_nimg: u64) -> AnyMethod {
        let name = self.to_possible_value().expect("every method has a name");
        AnyMethod::named(name.get_name(), imm, fm, total_nimg).expect("the command line's methods are AnyMethod's")
    }
}

/// Overrides of the preset, and evaluation settings.
#[derive(Args)]
struct Options {
    /// Training length in thousands of images.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64)]
    kimg: Option<f64>,
    /// Batch size (a multiple of the number of particles for IMM).
    #[arg(long, allow_negative_numbers = true, value_parser = positive_usize)]
    batch: Option<usize>,
    /// Learning rate.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_f64)]
    lr: Option<f64>,
    /// IMM: particles per group, M.
    #[arg(long, allow_negative_numbers = true, value_parser = positive_usize)]
    particles: Option<usize>,
    /// IMM: r(s, t) steps back in eta by (eta(T) - eta(eps)) / 2^k.
    #[arg(long)]
    k: Option<u32>,
    /// IMM: r(s, t) is also at least this far below t (the paper's FP16 runs: 1e-4).
    #[arg(long, allow_negative_numbers = true)]
    min_gap: Option<f64>,
    /// IMM: the weighting exponent a of w(s, t) (the paper's FP16 runs: 2).
    #[arg(long, allow_negative_numbers = true)]
    a: Option<f64>,
    /// IMM: the network's second time input, s or the stride t - s (the paper's FP16 runs).
    #[arg(long, value_enum)]
    time_input: Option<TimeInput>,
    /// Smallest time eps.
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// Largest time T (below 1).
    #[arg(long = "t-max", allow_negative_numbers = true)]
    t_max: Option<f64>,
    /// Sampler of the evaluation: pushforward or restart (IMM), heun (flow matching; euler is its
    /// pushforward).
    #[arg(long, value_enum)]
    sampler: Option<Sampler>,
    /// Sampling times: uniform, edm, or eta:V1,V2,... (explicit intermediate etas, one fewer than steps).
    #[arg(long, value_parser = grid)]
    grid: Option<Grid>,
    /// Seed of data, noise, times and initial weights.
    #[arg(long)]
    seed: Option<u64>,
    /// Sampling step counts to evaluate, comma-separated.
    #[arg(long, default_value = "1,2,4,8", allow_hyphen_values = true, value_parser = step_list)]
    eval_steps: StepList,
    /// Generated and held-out points per energy distance.
    #[arg(long, default_value_t = 2000, allow_negative_numbers = true, value_parser = positive_usize)]
    eval_samples: usize,
    /// Compute device [default: cpu for 2D presets, auto for images].
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
}

#[derive(Clone)]
struct StepList(Vec<usize>);

fn step_list(text: &str) -> Result<StepList, String> {
    let steps = text
        .split(',')
        .map(|item| match item.trim().parse::<i64>() {
            Ok(k) if k > 0 => Ok(k as usize),
            Ok(k) => Err(format!("sampling step counts must be positive, got {k}")),
            Err(_) => Err(format!("'{item}' is not a step count")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(StepList(steps))
}

fn grid(text: &str) -> Result<Grid, String> {
    Grid::parse(text).map_err(|e| e.to_string())
}

fn positive_f64(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!("expected a positive number, got '{text}'")),
    }
}

/// The class and guidance of a conditional model's samples.
#[derive(Args, Debug)]
struct Conditioning {
    /// Class to sample: all (one grid row per class, balanced in `imm eval`), an index, or a name
    /// (a digit; Fashion-MNIST's "Sneaker"; CIFAR-10's "cat") [default: all].
    #[arg(long)]
    class: Option<String>,
    /// Classifier-free guidance scale w: G = G(null) + w (G(class) - G(null)); 1 is none, and
    /// each guided step evaluates the network twice.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = guidance)]
    cfg: f64,
}

fn guidance(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a guidance scale >= 0, got '{text}'")),
    }
}

fn positive_usize(text: &str) -> Result<usize, String> {
    match text.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v as usize),
        _ => Err(format!("expected a positive integer, got '{text}'")),
    }
}

impl Options {
    /// Applies the overrides shared by every preset to its training set-up and both methods, then
    /// validates them; `kimg` also caps the intervals that depend on the length.
    fn override_common(&self, t: &mut TrainConfig, imm: &mut Imm, fm: &mut FlowMatching) -> Result<(), Error> {
        if let Some(kimg) = self.kimg {
            t.total_nimg = (kimg * 1000.0).round().max(1.0) as u64;
            t.log_every_nimg = t.log_every_nimg.min(t.total_nimg);
        }
        t.batch = self.batch.unwrap_or(t.batch);
        t.lr = self.lr.unwrap_or(t.lr);
        t.seed = self.seed.unwrap_or(t.seed);
        imm.particles = self.particles.unwrap_or(imm.particles);
        imm.times.k = self.k.unwrap_or(imm.times.k);
        imm.times.min_gap = self.min_gap.unwrap_or(imm.times.min_gap);
        imm.a = self.a.unwrap_or(imm.a);
        imm.precond.time_input = self.time_input.unwrap_or(imm.precond.time_input);
        imm.times.eps = self.eps.unwrap_or(imm.times.eps);
        imm.times.t_max = self.t_max.unwrap_or(imm.times.t_max);
        (fm.eps, fm.t_max) = (imm.times.eps, imm.times.t_max);
        match self.sampler {
            Some(Sampler::Heun) => fm.sampler = Sampler::Heun,
            Some(sampler) => imm.sampler = sampler,
            None => {}
        }
        if let Some(grid) = &self.grid {
            (imm.grid, fm.grid) = (grid.clone(), grid.clone());
        }
        imm.validate()?;
        fm.validate()?;
        t.validate()?;
        // Fail before training, not after, when the grid cannot make one of the step counts.
        for &steps in &self.eval_steps.0 {
            imm.timesteps(steps)?;
        }
        Ok(())
    }

    /// An image preset with these overrides applied, validated.
    fn apply_image(&self, mut p: ImagePreset, accumulate: Option<usize>, precision: Option<Precision>) -> Result<ImagePreset, Error> {
        p.train.accumulate = accumulate.unwrap_or(p.train.accumulate);
        if let Some(precision) = precision {
            p.net = p.net.with_precision(precision);
        }
        self.override_common(&mut p.train, &mut p.imm, &mut p.fm)?;
        p.snapshot_every_nimg = p.snapshot_every_nimg.min(p.train.total_nimg);
        p.net.validate()?;
        Ok(p)
    }

    /// A 2D preset with these overrides applied, validated, and what to evaluate.
    fn apply(&self, mut p: Preset) -> Result<(Preset, EvalOptions), Error> {
        self.override_common(&mut p.train, &mut p.imm, &mut p.fm)?;
        p.imm.check_batch(p.train.batch)?;
        let eval = EvalOptions { steps: self.eval_steps.0.clone(), samples: self.eval_samples };
        Ok((p, eval))
    }
}

fn named_image_preset(name: &str) -> Result<ImagePreset, Error> {
    image_preset(name)
        .ok_or_else(|| Error::new(format!("unknown image preset '{name}'; available: {}", IMAGE_PRESETS.join(", "))))
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Demo { preset: name, out, options } => {
            let (p, eval) = options.apply(preset(&name)?)?;
            demo(&p, options.device.unwrap_or(DeviceChoice::Cpu), &eval, &out)
        }
        Command::Train { .. } => train(command),
        Command::Sample { weights, preset: name, steps, sampler, grid, seed, n, out, vae, condition, device } => {
            let preset = name.map(|name| named_image_preset(&name)).transpose()?;
            let Conditioning { class, cfg } = condition;
            let request = SampleRequest { weights, preset, steps, sampler, grid, seed, count: n, class, cfg, out, vae };
            sample(&request, &device.device()?.0)
        }
        Command::Golden { file, device } => crate::evaluation::pipeline::golden(&file, &device.device()?.0),
        Command::Bench { what } => bench(what),
        Command::Eval { weights, preset: name, steps, sampler, grid, n, metric, classifier, data_dir, seed, json, reference, vae, condition, device } => {
            let preset = name.map(|name| named_image_preset(&name)).transpose()?;
            let Conditioning { class, cfg } = condition;
            let request = EvalRequest {
                weights,
                preset,
                steps: steps.0,
                grid,
                sampler,
                count: n,
                seed,
                metric,
                classifier,
                data_dir,
                class,
                cfg,
                json,
                reference,
                vae,
            };
            print_report(&evaluate(&request, &device.device()?.0)?);
            Ok(())
        }
        Command::Classifier { data, epochs, out, data_dir, seed, keep, device } => {
            let set = match data {
                DataName::Mnist => ImageSet::Mnist,
                DataName::FashionMnist => ImageSet::FashionMnist,
            };
            crate::evaluation::pipeline::classifier(set, epochs, out, data_dir.as_deref(), seed, keep, &device.device()?.0)
        }
        Command::Export { weights, out } => export(&weights, &out),
        Command::Encode { data, vae, out, resolution, xflip, batch, shard_images, precision, device } => {
            let (device, choice) = device.device()?;
            let half = choice != DeviceChoice::Cpu && Precision::F16.check(&device).is_ok();
            let precision = precision.unwrap_or(if half { Precision::F16 } else { Precision::F32 });
            let request = EncodeRequest { data, vae, out, resolution, xflip, batch, shard_images, precision };
            encode(&request, &device)
        }
        Command::Presets => {
            for name in names().into_iter().chain(IMAGE_PRESETS) {
                println!("{name}");
            }
            Ok(())
        }
    }
}

/// `imm train`: an image run on disk, or a 2D run with its evaluation.
fn train(command: Command) -> Result<(), Error> {
    let Command::Train { preset: name, method, out, data_dir, vae, image_folder, labels, resume, accumulate, devices, precision, snapshot_kimg, options } = command else {
        unreachable!("called for train")
    };
    let method_name = method.to_possible_value().expect("every method has a name").get_name().to_string();
    let default_out = || PathBuf::from(format!("runs/{name}-{method_name}"));
    if let Some(p) = image_preset(&name) {
        let mut p = options.apply_image(p, accumulate, precision)?;
        if let Some(labels) = labels {
            if p.net.classes() == 0 {
                return Err(Error::new(format!("--labels: {name} is unconditional; choose a conditional preset")));
            }
            p.labels = labels;
        }
        if let Some(kimg) = snapshot_kimg {
            p.snapshot_every_nimg = ((kimg * 1000.0).round() as u64).clamp(1, p.train.total_nimg);
        }
        let choice = options.device.unwrap_or(DeviceChoice::Auto);
        // Processes sharing a machine take its GPUs in turn: local rank i, GPUs i·n to i·n + n - 1.
        let n = devices.unwrap_or(1);
        let (all, choice) = choice.devices(launched_local_rank().unwrap_or(0) * n, n)?;
        let device = (&all[0], choice);
        let steps = options.eval_steps.0.clone();
        let run = ImageRun { out: out.unwrap_or_else(default_out), data_dir, image_folder, resume, steps, devices: all.clone(), vae };
        let ranks = start_ranks()?;
        return train_images(&p, method.with(&p.imm, &p.fm, p.train.total_nimg), device, &run, ranks);
    }
    if launched_ranks().is_some_and(|n| n > 1) {
        return Err(Error::new("training across processes (mpirun, srun) applies to image presets only"));
    }
    let image_only = [data_dir.is_some(), image_folder.is_some(), labels.is_some(), accumulate.is_some(), devices.is_some(), vae.is_some()];
    if resume || image_only.contains(&true) || precision.is_some() || snapshot_kimg.is_some() {
        return Err(Error::new(
            "--resume, --data-dir, --vae, --image-folder, --labels, --accumulate, --devices, --snapshot-kimg and --precision apply to image presets only",
        ));
    }
    let (p, eval) = options.apply(preset(&name)?)?;
    let out = out.unwrap_or_else(default_out);
    let choice = options.device.unwrap_or(DeviceChoice::Cpu);
    let (device, choice) = choice.device()?;
    let device = (&device, choice);
    let outcome = train_and_evaluate(&p, method.with(&p.imm, &p.fm, p.train.total_nimg), device, &eval, &out)?;
    println!("Energy distance to held-out data (floor {:.5}):", outcome.floor);
    for (k, e) in &outcome.energy {
        println!("{k:>3} step{}  {e:.5}", if *k == 1 { " " } else { "s" });
    }
    println!("Wrote {}/{{config.json, metrics.jsonl, eval.json, samples.png, ema.safetensors}}.", out.display());
    Ok(())
}

/// `imm bench ...`.
fn bench(what: Bench) -> Result<(), Error> {
    match what {
        Bench::Allreduce { presets, iters, json, device } => {
            let presets = presets.split(',').filter(|p| !p.is_empty()).map(named_image_preset).collect::<Result<Vec<_>, Error>>()?;
            let Some(ranks) = start_ranks()? else {
                return Err(Error::new("bench allreduce measures several processes: run it under mpirun -np 2 (or more), or srun"));
            };
            let figures = bench::allreduce(ranks.as_ref(), &presets, iters, &device.device()?.0)?;
            match json {
                Some(path) if ranks.rank() == 0 => write_json(&path, &figures),
                _ => Ok(()),
            }
        }
        Bench::Mmd { groups, particles, dim, iters, json, device } => {
            let figures = bench::mmd(&device.device()?.0, [groups, particles, dim], iters)?;
            json.map_or(Ok(()), |path| write_json(&path, &figures))
        }
        Bench::Launches { presets, top, json, device } => {
            let images = presets
                .split(',')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (name, batch) = p.split_once(':').ok_or_else(|| Error::new(format!("--presets takes PRESET:BATCH, not '{p}'")))?;
                    let batch = batch.parse().ok().filter(|&b| b > 0).ok_or_else(|| Error::new(format!("'{batch}' is not a positive batch size")))?;
                    Ok((named_image_preset(name)?, batch))
                })
                .collect::<Result<Vec<_>, Error>>()?;
            bench::counts::install()?;
            let (device, choice) = device.device()?;
            if matches!(choice, DeviceChoice::Cpu) {
                return Err(Error::new("launch counts come from cubecl's runtime, which the CPU backend does not use: use --device wgpu (or cuda)"));
            }
            let rows = bench::launches(&device, &images, top)?;
            json.map_or(Ok(()), |path| write_json(&path, &rows))
        }
        Bench::Train { preset: name, method, batch, accumulate, devices, timing: Timing { precision, iters, json, device } } => {
            let mut p = named_image_preset(&name)?;
            p.train.accumulate = accumulate.unwrap_or(p.train.accumulate);
            p.net = p.net.with_precision(precision);
            let batch = batch.unwrap_or(p.train.batch);
            let devices = device.devices(0, devices)?.0;
            let figures = bench::train(&p, method.with(&p.imm, &p.fm, p.train.total_nimg), batch, iters, &devices)?;
            json.map_or(Ok(()), |path| write_json(&path, &figures))
        }
        Bench::Sample { preset: name, weights, batches, steps, timing: Timing { precision, iters, json, device } } => {
            let device = device.device()?.0;
            precision.check(&device)?;
            let model = match weights {
                Some(path) => ImageModel::load(&Tensors::read(&path)?, &path.display().to_string(), None, &device)?,
                None => {
                    let p = named_image_preset(&name)?;
                    ImageModel::untrained(&p, AnyMethod::Imm(p.imm.clone()), &device)?
                }
            }
            .with_precision(precision);
            let rows = bench::sample(&model, &batches.0, &steps.0, iters, &device)?;
            json.map_or(Ok(()), |path| write_json(&path, &rows))
        }
    }
}

/// The processes this one trains with, when a launcher (mpirun, srun) started several.
#[cfg(feature = "mpi")]
fn start_ranks() -> Result<Option<Box<dyn Ranks>>, Error> {
    if launched_ranks().is_none() {
        return Ok(None);
    }
    let mpi = crate::training::mpi::Mpi::start()?;
    Ok((mpi.count() > 1).then(|| Box::new(mpi) as Box<dyn Ranks>))
}

/// Without MPI, several processes would each train alone into the same directory: refused.
#[cfg(not(feature = "mpi"))]
fn start_ranks() -> Result<Option<Box<dyn Ranks>>, Error> {
    match launched_ranks() {
        Some(n) if n > 1 => Err(Error::new(format!(
            "started as one of {n} processes, but this imm was built without MPI: build it with \
             `cargo build --release --features mpi` (needs Open MPI's libopenmpi-dev and libclang-dev)"
        ))),
        _ => Ok(None),
    }
}

/// Parses the arguments and runs the command; with none, the demo. One of several processes says
/// which rank failed, and its error ends them all.
pub fn main() -> ExitCode {
    let command = Cli::parse().command.or_else(|| Cli::parse_from(["imm", "demo"]).command);
    let result = run(command.expect("demo parses"));
    if let Err(e) = &result {
        match (launched_rank(), launched_ranks()) {
            (Some(rank), Some(count)) if count > 1 => eprintln!("error (rank {rank} of {count}): {e}"),
            _ => eprintln!("error: {e}"),
        }
    }
    #[cfg(feature = "mpi")]
    crate::training::mpi::end(result.is_ok());
    if result.is_ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
