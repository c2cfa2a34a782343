//! Benchmarks that print figures (`imm bench ...`); speed targets are checked here, never in tests.
//! [`counts`]: what a step costs a GPU device, counted by its runtime.

pub mod counts;

use std::time::Instant;

use burn::module::Module;
use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
use serde::Serialize;
use serde_json::json;

use crate::bench::counts::Counts;
use crate::kernels::mmd::{REFERENCE_CHUNK_BYTES, comparison, mmd_reference_chunked, mmd_with, relative_error};
use crate::kernels::{Kernels, kernels_for};
use crate::labels::Labels;
use crate::method::Method;
use crate::method::precond::Condition;
use crate::networks::Network;
use crate::training::image_model::{Classes, ImageModel};
use crate::training::presets::ImagePreset;
use crate::training::ranks::{BUCKET, Ranks, sum_in_buckets};
use crate::training::trainer::{TrainConfig, Trainer};
use crate::{Error, Rng};

/// The largest relative error the fused MMD may have against the reference.
pub const MMD_TOLERANCE: f32 = 1e-4;

fn sync(device: &Device) -> Result<(), Error> {
    device.sync().map_err(|e| Error::new(format!("device error: {e}")))
}

/// Mean milliseconds of `run` over `iters` calls after two warm-up calls, the device drained.
fn time_ms(device: &Device, iters: usize, mut run: impl FnMut()) -> Result<f64, Error> {
    for _ in 0..2 {
        run();
    }
    sync(device)?;
    let start = Instant::now();
    for _ in 0..iters {
        run();
    }
    sync(device)?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / iters as f64)
}

/// Forward and backward of one MMD implementation on fixed random inputs.
fn time_mmd(
    device: &Device,
    [g, m, d]: [usize; 3],
    iters: usize,
    f: impl Fn(Tensor<3>, Tensor<3>, Tensor<1>) -> Tensor<1>,
) -> Result<f64, Error> {
    let device = device.clone().autodiff();
    let y_t = Tensor::<3>::random([g, m, d], Distribution::Normal(0.0, 1.0), &device).require_grad();
    let y_r = Tensor::<3>::random([g, m, d], Distribution::Normal(0.0, 1.0), &device);
    let scale = Tensor::<1>::from_data(TensorData::new(vec![10f32; g], [g]), &device);
    time_ms(&device, iters, || {
        let grads = f(y_t.clone(), y_r.clone(), scale.clone()).sum().backward();
        drop(y_t.grad(&grads));
    })
}

/// `imm bench mmd`: checks the fused MMD against the reference on one set of inputs (an error
/// over [`MMD_TOLERANCE`]), then times forward + backward of both (the reference a few groups per
/// launch where its intermediates would exceed wgpu's buffer limits) and relates the fused time to
/// the bandwidth floor: y_t and y_r read once, dL/dy_t written once, at the device's streaming
/// bandwidth (measured as x + 1 over as many floats).
/// Prints a table and returns its figures.
pub fn mmd(device: &Device, shape: [usize; 3], iters: usize) -> Result<serde_json::Value, Error> {
    let [g, m, d] = shape;
    // On wgpu both implementations run: the WGSL one is used there, the CubeCL one on CUDA.
    let implementations = match kernels_for(device, DType::F32) {
        Some(Kernels::Wgsl) => vec![Kernels::Wgsl, Kernels::CubeCl],
        Some(Kernels::CubeCl) => vec![Kernels::CubeCl],
        Some(Kernels::Cpu) | None => return Err(Error::new("the fused MMD kernels run on wgpu and CUDA devices: use --device wgpu (or cuda)")),
    };
    if !(1..=16).contains(&m) {
        return Err(Error::new(format!("--particles must be 1 to 16, not {m}")));
    }
    println!("MMD, G = {g} groups of M = {m} particles of D = {d}: forward + backward, mean of {iters}");
    let mut checks = Vec::new();
    for &kernels in &implementations {
        let c = comparison(device, shape, 0, kernels);
        let e_value = relative_error(&crate::floats(c.fused.0, "the fused MMD")?, &crate::floats(c.reference.0, "the reference MMD")?);
        let e_grad = relative_error(&crate::floats(c.fused.1, "the fused MMD's gradient")?, &crate::floats(c.reference.1, "the reference MMD's gradient")?);
        println!("check of {kernels:?} against the reference: relative error {e_value:.2e} (values), {e_grad:.2e} (gradients)");
        checks.push(json!({"kernels": format!("{kernels:?}"), "error_values": e_value, "error_gradients": e_grad}));
        if e_value > MMD_TOLERANCE || e_grad > MMD_TOLERANCE {
            return Err(Error::new(format!("the fused MMD differs from the reference by more than {MMD_TOLERANCE:e}")));
        }
    }

    let reference = time_mmd(device, shape, iters, mmd_reference_chunked)?;
    let n = g * m * d;
    let x = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), device);
    let copy = time_ms(device, iters, || drop(x.clone().add_scalar(1.0)))?;
    let stream_gbs = (2 * n * 4) as f64 / copy / 1e6;
    let floor_bytes = (3 * n + 3 * g) * 4;
    let floor = floor_bytes as f64 / stream_gbs / 1e6;
    let gbs = |ms: f64| floor_bytes as f64 / ms / 1e6;
    let chunk = (REFERENCE_CHUNK_BYTES / (m * m * d * 4)).max(1).min(g);
    println!("{:<24} {:>10} {:>14} {:>9} {:>10}", "", "ms", "GB/s at floor", "speed-up", "x floor");
    println!("{:<24} {reference:>10.3} {:>14.1} {:>9} {:>10.2}  ({chunk} groups per launch)", "reference tensor ops", gbs(reference), "1.0x", reference / floor);
    let mut fused_ms = serde_json::Map::new();
    for kernels in implementations {
        let fused = time_mmd(device, shape, iters, |a, b, c| mmd_with(a, b, c, kernels))?;
        let name = format!("fused {kernels:?} kernels");
        println!("{name:<24} {fused:>10.3} {:>14.1} {:>8.1}x {:>10.2}", gbs(fused), reference / fused, fused / floor);
        fused_ms.insert(format!("{kernels:?}"), json!(fused));
    }
    println!(
        "floor: {:.1} MB (inputs read once, outputs written once) at the streaming bandwidth of {stream_gbs:.1} GB/s (x + 1) = {floor:.3} ms",
        floor_bytes as f64 / 1e6
    );
    Ok(json!({"bench": "mmd", "groups": g, "particles": m, "dim": d, "iters": iters, "checks": checks,
        "reference_ms": reference, "fused_ms": fused_ms, "floor_ms": floor, "stream_gb_per_s": stream_gbs}))
}

/// One row of `imm bench sample`.
#[derive(Clone, Debug, Serialize)]
pub struct SampleRow {
    pub batch: usize,
    pub steps: usize,
    pub ms_per_batch: f64,
    pub images_per_s: f64,
}

/// `imm bench train`: training images per second of a preset's network and method at a batch
/// size, on random images (speed does not depend on the data); `iters` timed steps after two
/// warm-up steps. Prints one line and returns the figures.
pub fn train<M: Method + Clone>(preset: &ImagePreset, method: M, batch: usize, iters: usize, devices: &[Device]) -> Result<serde_json::Value, Error> {
    let device = &devices[0];
    method.check_batch(batch / preset.train.accumulate)?;
    let net = preset.net.init(&mut Rng::new(0), &device.clone().autodiff())?;
    let params = net.num_params();
    let config = TrainConfig { batch, ..preset.train.clone() };
    let replicas = devices.iter().map(|d| d.clone().autodiff()).collect();
    let mut trainer = Trainer::new(net, method.clone(), config)?.with_devices(replicas)?;
    let dim = preset.net.in_channels() * preset.net.img_resolution() * preset.net.img_resolution();
    let ad = device.clone().autodiff();
    let x = Tensor::<2>::random([batch, dim], Distribution::Uniform(-1.0, 1.0), &ad);
    let classes = preset.net.classes();
    let y = (classes > 0).then(|| Classes::All { row: 1 }.labels(0, batch, classes));
    // As the training loop runs them: one chunk of steps, one read at its end.
    let batches = |n: usize| vec![(x.clone(), y.clone()); n];
    trainer.run_chunk(batches(2))?;
    sync(device)?;
    let (reads, start) = (trainer.device_reads(), Instant::now());
    trainer.run_chunk(batches(iters))?;
    sync(device)?;
    let ms = start.elapsed().as_secs_f64() * 1e3 / iters as f64;
    let reads = (trainer.device_reads() - reads) as f64 / iters as f64;
    if trainer.skipped().0 > 0 {
        return Err(Error::new("a step's loss was not finite: the benchmark did not train"));
    }
    let images_per_s = batch as f64 / (ms / 1e3);
    println!(
        "{} {} ({params} parameters, {}), batch {batch} (accumulate {}, {} device{}): {ms:.1} ms per step, {images_per_s:.1} images/s, {reads:.3} device reads per step",
        preset.name,
        method.name(),
        preset.net.precision().name(),
        preset.train.accumulate,
        devices.len(),
        if devices.len() == 1 { "" } else { "s" }
    );
    Ok(json!({"bench": "train", "preset": preset.name, "method": method.name(), "params": params,
              "precision": preset.net.precision(), "batch": batch,
              "accumulate": preset.train.accumulate, "devices": devices.len(), "iters": iters, "ms_per_step": ms,
              "images_per_s": images_per_s, "reads_per_step": reads}))
}

/// `imm bench sample`: latency and throughput of sampling a preset's network (random weights
/// unless `model` is given) at each batch size and step count; prints a table.
pub fn sample(model: &ImageModel, batches: &[usize], steps: &[usize], iters: usize, device: &Device) -> Result<Vec<SampleRow>, Error> {
    for &k in steps {
        model.check_steps(k)?;
    }
    let dim = model.dim();
    let mut rows = Vec::new();
    println!("network in {}", model.config.precision().name());
    println!("{:>6} {:>6} {:>12} {:>10}", "batch", "steps", "ms / batch", "images/s");
    for &batch in batches {
        let z = Tensor::<2>::random([batch, dim], Distribution::Normal(0.0, model.sigma_data()), device);
        let condition = model.condition(model.classes(None, 1)?, 1.0, 0, batch)?;
        for &k in steps {
            let mut rng = Rng::new(0);
            let mut failed = None;
            let ms = time_ms(device, iters, || {
                if let Err(e) = model.sample(z.clone(), &condition, k, &mut rng) {
                    failed = Some(e);
                }
            })?;
            if let Some(e) = failed {
                return Err(e);
            }
            let row = SampleRow { batch, steps: k, ms_per_batch: ms, images_per_s: batch as f64 / (ms / 1e3) };
            println!("{:>6} {:>6} {:>12.2} {:>10.1}", row.batch, row.steps, row.ms_per_batch, row.images_per_s);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// One row of `imm bench launches`: a training step and a one-step sampling call of a network.
#[derive(Clone, Debug, Serialize)]
pub struct LaunchRow {
    pub row: String,
    pub batch: usize,
    pub train: Counts,
    /// Reads from the device to the host per training step of the training loop, over a chunk.
    pub reads_per_step: f64,
    pub sample: Counts,
}

/// Counts a training step (the third: the first ones compile and autotune) and a one-step sampling
/// call (the second) of `net` under `method` on random data.
fn launch_row<N: Network, M: Method + Clone>(
    row: String,
    net: N,
    method: M,
    config: TrainConfig,
    dim: usize,
    labels: Option<Labels>,
    device: &Device,
) -> Result<LaunchRow, Error> {
    let batch = config.batch;
    let ad = device.clone().autodiff();
    let mut trainer = Trainer::new(net, method.clone(), config)?;
    let x = Tensor::<2>::random([batch, dim], Distribution::Uniform(-1.0, 1.0), &ad);
    // The page's path: no read of the step's finiteness check.
    let mut step = || {
        let gradients = trainer.gradients(x.clone(), labels.clone());
        drop(trainer.apply(gradients));
        Ok(())
    };
    step()?;
    step()?;
    let train = counts::count(device, step)?;
    // A chunk of the loop at the configuration's log interval (it ends at a record).
    let steps = trainer.steps_to_record();
    let reads = trainer.device_reads();
    trainer.run_chunk(vec![(x.clone(), labels.clone()); steps])?;
    let reads_per_step = (trainer.device_reads() - reads) as f64 / steps as f64;
    let z = Tensor::<2>::random([batch, dim], Distribution::Normal(0.0, method.sigma_data()), device);
    let condition = Condition { labels, ..Condition::none() };
    let ema = &trainer.ema;
    // Samples are kept until the count has drained the device: fusion skips work nobody reads.
    let mut kept = Vec::new();
    let mut sample = || Ok(kept.push(method.sample(ema, z.clone(), &condition, 1, &mut Rng::new(0))?));
    sample()?;
    let sample = counts::count(device, sample)?;
    Ok(LaunchRow { row, batch, train, reads_per_step, sample })
}

/// `imm bench launches`: kernel launches and buffer reservations of a training step and a sampling
/// step, counted by the device's runtime, for the page's 2D MLP (both methods, the page's size and
/// batch) and the named image presets at their batch sizes (IMM). Prints a table and, with `top`,
/// each row's most launched kernels.
pub fn launches(device: &Device, images: &[(ImagePreset, usize)], top: usize) -> Result<Vec<LaunchRow>, Error> {
    let mut rows = Vec::new();
    let toy = crate::training::presets::preset("checkerboard")?;
    let mlp = || toy.net.init(&mut Rng::new(0), &device.clone().autodiff());
    rows.push(launch_row(format!("page 2D MLP, {}", toy.imm.name()), mlp(), toy.imm.clone(), toy.train.clone(), 2, None, device)?);
    rows.push(launch_row(format!("page 2D MLP, {}", toy.fm.name()), mlp(), toy.fm.clone(), toy.train.clone(), 2, None, device)?);
    for (preset, batch) in images {
        let net = preset.net.init(&mut Rng::new(0), &device.clone().autodiff())?;
        let config = TrainConfig { batch: *batch, accumulate: 1, ..preset.train.clone() };
        let dim = preset.net.in_channels() * preset.net.img_resolution() * preset.net.img_resolution();
        let classes = preset.net.classes();
        let labels = (classes > 0).then(|| Classes::All { row: 1 }.labels(0, *batch, classes));
        rows.push(launch_row(format!("{}, {}", preset.name, preset.imm.name()), net, preset.imm.clone(), config, dim, labels, device)?);
    }
    println!("{:<28} {:>6} | {:>9} {:>8} {:>8} {:>10} {:>6} | {:>9} {:>8} {:>8} {:>10}", "per step", "batch", "launches", "kernels", "buffers", "MB", "reads", "launches", "kernels", "buffers", "MB");
    println!("{:<28} {:>6} | {:^46} | {:^39}", "", "", "training", "sampling (1 step)");
    for r in &rows {
        let cells = |c: &Counts| format!("{:>9} {:>8} {:>8} {:>10.2}", c.launches, c.kernels, c.buffers, c.buffer_bytes as f64 / 1e6);
        println!("{:<28} {:>6} | {} {:>6.3} | {}", r.row, r.batch, cells(&r.train), r.reads_per_step, cells(&r.sample));
    }
    println!("reads: the training loop's reads from the device to the host per step, over one chunk of steps");
    for r in rows.iter().filter(|_| top > 0) {
        for (what, c) in [("training", &r.train), ("sampling", &r.sample)] {
            println!("\n{}, {what}: the {top} most launched of {} kernels", r.row, c.kernels);
            for (name, n) in c.by_kernel.iter().take(top) {
                println!("{n:>7}  {name}");
            }
        }
    }
    Ok(rows)
}

/// `imm bench allreduce`, on every rank of an MPI launch: for each preset's gradient (its parameter
/// count in f32, plus one flag per parameter), the mean time of the all-reduce in
/// [`BUCKET`]-sized calls, its algorithm bandwidth (bytes / time) and bus bandwidth (x 2 (N - 1) / N,
/// what each link carries in a ring), and the time of staging that many floats through host memory
/// (one read from `device`, one write to it): the time the ranks add to a step. Rank 0 prints.
pub fn allreduce(ranks: &dyn Ranks, presets: &[ImagePreset], iters: usize, device: &Device) -> Result<serde_json::Value, Error> {
    let n = ranks.count();
    let say = |line: String| {
        if ranks.rank() == 0 {
            println!("{line}");
        }
    };
    say(format!("All-reduce (sum, f32) over {n} ranks in buckets of {} MB, mean of {iters} after one warm-up", BUCKET * 4 >> 20));
    say(format!("{:<16} {:>12} {:>9} {:>12} {:>11} {:>11} {:>11} {:>13}", "preset", "parameters", "MB", "all-reduce", "alg GB/s", "bus GB/s", "staging", "added ms/step"));
    let mut rows = Vec::new();
    for p in presets {
        let net = p.net.init(&mut Rng::new(0), &Device::flex())?;
        let params = net.num_params();
        let mut values = vec![1f32; params + crate::io::weights::param_ids(&net).len()];
        let bytes = values.len() * 4;
        sum_in_buckets(ranks, &mut values);
        let start = Instant::now();
        for _ in 0..iters {
            sum_in_buckets(ranks, &mut values);
        }
        let reduce_ms = start.elapsed().as_secs_f64() * 1e3 / iters as f64;
        // In buckets, as the trainer stages them (a wgpu buffer may not hold a whole gradient).
        let staged: Vec<Tensor<1>> = (0..params)
            .step_by(BUCKET)
            .map(|start| Tensor::from_data(TensorData::new(vec![0f32; BUCKET.min(params - start)], [BUCKET.min(params - start)]), device))
            .collect();
        let staging_ms = time_ms(device, iters, || {
            for bucket in &staged {
                drop(Tensor::<1>::from_data(bucket.clone().into_data(), device));
            }
        })?;
        // Every rank measured the same calls; rank 0's figures are printed.
        let alg = bytes as f64 / reduce_ms / 1e6;
        let bus = alg * 2.0 * (n - 1) as f64 / n as f64;
        say(format!(
            "{:<16} {params:>12} {:>9.1} {reduce_ms:>9.2} ms {alg:>11.2} {bus:>11.2} {staging_ms:>8.2} ms {:>13.2}",
            p.name,
            bytes as f64 / 1e6,
            reduce_ms + staging_ms
        ));
        rows.push(json!({"preset": p.name, "parameters": params, "bytes": bytes, "allreduce_ms": reduce_ms,
            "alg_gb_per_s": alg, "bus_gb_per_s": bus, "staging_ms": staging_ms, "added_ms_per_step": reduce_ms + staging_ms}));
    }
    Ok(json!({"bench": "allreduce", "ranks": n, "bucket_floats": BUCKET, "iters": iters, "rows": rows}))
}
