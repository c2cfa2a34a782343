//! The native commands: train one method on a preset, or the default demo comparing IMM with flow
//! matching. Writes config.json, metrics.jsonl, eval.json and samples.png per run.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use serde_json::json;

use crate::DeviceChoice;
use crate::training::run_dir::{Terminal, io_error, prepare_dir, write_atomic, write_json};
use crate::data::Dataset;
use crate::data::toy::ToyData;
use crate::evaluation::energy::energy_distance;
use crate::io::plot::{Panel, scatter_grid};
use crate::io::safetensors::Tensors;
use crate::io::weights::named_params;
use crate::method::Method;
use crate::method::precond::Condition;
use crate::networks::Network;
use crate::training::presets::Preset;
use crate::training::trainer::{Seeds, Trainer, fit};
use crate::{Error, Rng};

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

/// Held-out data of the preset's distribution and the energy-distance floor: the distance between
/// two independent samples of that size.
pub fn held_out(preset: &Preset, n: usize) -> (Vec<f32>, f64) {
    let mut data = ToyData::new(preset.toy, HELD_OUT_SEED);
    let (a, b) = (data.sample(n), data.sample(n));
    let floor = energy_distance(&a, &b, 2);
    (a, floor)
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
        let x = method.sample(net, z, &Condition::none(), k, &mut rng)?;
        let values = crate::floats(x, "samples")?;
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
    let Seeds { mut weights, data, rest: mut seeds } = Seeds::new(train.seed);
    let net = preset.net.init(&mut weights, &device.clone().autodiff());
    let mut data = ToyData::new(preset.toy, data);
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
    write_atomic(&out.join("ema.safetensors"), &snapshot.to_bytes())?;

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
