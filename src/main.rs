//! `imm`: train and compare few-step generative models. With no arguments it runs the demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use imm::app::{DeviceChoice, EvalOptions, demo, train_and_evaluate};
use imm::Error;
use imm::presets::{Preset, names, preset};
use imm::sampler::{Grid, Sampler};
use imm::trainer::Method;

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
    /// Train one method on a preset, then evaluate it and plot its samples.
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
        #[command(flatten)]
        options: Options,
    },
    /// List the presets.
    Presets,
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

#[derive(Clone, Copy, ValueEnum)]
enum MethodName {
    /// Inductive Moment Matching.
    Imm,
    /// Conditional flow matching with an Euler sampler (the baseline).
    Fm,
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
    /// Smallest time eps.
    #[arg(long, allow_negative_numbers = true)]
    eps: Option<f64>,
    /// Largest time T (below 1).
    #[arg(long = "t-max", allow_negative_numbers = true)]
    t_max: Option<f64>,
    /// IMM sampler used in the evaluation.
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
    /// Compute device.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Cpu)]
    device: DeviceChoice,
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

fn positive_usize(text: &str) -> Result<usize, String> {
    match text.parse::<i64>() {
        Ok(v) if v > 0 => Ok(v as usize),
        _ => Err(format!("expected a positive integer, got '{text}'")),
    }
}

impl Options {
    /// The preset with these overrides applied, validated.
    fn apply(&self, mut p: Preset) -> Result<(Preset, EvalOptions), Error> {
        let t = &mut p.train;
        if let Some(kimg) = self.kimg {
            t.total_nimg = (kimg * 1000.0).round().max(1.0) as u64;
            t.log_every_nimg = t.log_every_nimg.min(t.total_nimg);
        }
        t.batch = self.batch.unwrap_or(t.batch);
        t.lr = self.lr.unwrap_or(t.lr);
        t.seed = self.seed.unwrap_or(t.seed);
        p.imm.particles = self.particles.unwrap_or(p.imm.particles);
        p.imm.times.k = self.k.unwrap_or(p.imm.times.k);
        p.imm.times.eps = self.eps.unwrap_or(p.imm.times.eps);
        p.imm.times.t_max = self.t_max.unwrap_or(p.imm.times.t_max);
        (p.fm.eps, p.fm.t_max) = (p.imm.times.eps, p.imm.times.t_max);
        p.imm.sampler = self.sampler.unwrap_or(p.imm.sampler);
        if let Some(grid) = &self.grid {
            (p.imm.grid, p.fm.grid) = (grid.clone(), grid.clone());
        }
        p.imm.validate()?;
        p.fm.validate()?;
        p.train.validate()?;
        p.imm.check_batch(p.train.batch)?;
        // Fail before training, not after, when the grid cannot make one of the step counts.
        for &steps in &self.eval_steps.0 {
            p.imm.timesteps(steps)?;
        }
        let eval = EvalOptions { steps: self.eval_steps.0.clone(), samples: self.eval_samples };
        Ok((p, eval))
    }
}

fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Demo { preset: name, out, options } => {
            let (p, eval) = options.apply(preset(&name)?)?;
            demo(&p, options.device, &eval, &out)
        }
        Command::Train { preset: name, method, out, options } => {
            let (p, eval) = options.apply(preset(&name)?)?;
            let method_name = match method {
                MethodName::Imm => "imm",
                MethodName::Fm => "fm",
            };
            let out = out.unwrap_or_else(|| PathBuf::from(format!("runs/{}-{method_name}", p.name)));
            let device = (&options.device.device()?, options.device);
            let outcome = match method {
                MethodName::Imm => train_and_evaluate(&p, p.imm.clone(), device, &eval, &out)?,
                MethodName::Fm => train_and_evaluate(&p, p.fm.clone(), device, &eval, &out)?,
            };
            println!("Energy distance to held-out data (floor {:.5}):", outcome.floor);
            for (k, e) in &outcome.energy {
                println!("{k:>3} step{}  {e:.5}", if *k == 1 { " " } else { "s" });
            }
            println!("Wrote {}/{{config.json, metrics.jsonl, eval.json, samples.png}}.", out.display());
            Ok(())
        }
        Command::Golden { file, device } => {
            let rows = imm::golden::check(&file, &device.device()?)?;
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
        Command::Presets => {
            for name in names() {
                println!("{name}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    // No arguments: the demo with its defaults.
    let command = Cli::parse().command.or_else(|| Cli::parse_from(["imm", "demo"]).command);
    match run(command.expect("demo parses")) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
