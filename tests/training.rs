//! Short training runs on the CPU: IMM learns, runs are reproducible, flow matching and MeanFlow
//! train in the same loop.

use burn::tensor::{Device, Tensor, TensorData};
use imm::data::Dataset;
use imm::data::toy::ToyData;
use imm::evaluation::energy::energy_distance;
use imm::method::Method;
use imm::method::flow_matching::FlowMatching;
use imm::method::consistency::Consistency;
use imm::method::meanflow::MeanFlow;
use imm::method::shortcut::Shortcut;
use imm::method::sampler::Sampler;
use imm::method::precond::Condition;
use imm::networks::mlp::{Mlp, MlpConfig};
use imm::{Labels, Rng};
use imm::training::presets::preset;
use imm::training::trainer::{MAX_BAD_STEPS, Metrics, Observer, Trainer, fit};

const EVAL_N: usize = 1000;

fn energy_at<M: Method>(method: &M, net: &Mlp, steps: usize, held_out: &[f32], device: &Device) -> f64 {
    let z = Tensor::<2>::from_data(TensorData::new(Rng::new(99).normal_vec(EVAL_N * 2, 0.5), [EVAL_N, 2]), device);
    let x = method.sample(net, z, &Condition::none(), steps, &mut Rng::new(5)).unwrap().into_data().try_into_vec::<f32>().unwrap();
    energy_distance(&x, held_out, 2)
}

fn train<M: Method + Clone>(method: M, steps: usize, seed: u64) -> (Trainer<Mlp, M>, Vec<f32>) {
    let p = preset("8gaussians").unwrap();
    let mut config = p.train.clone();
    config.seed = seed;
    config.batch = 256;
    config.ema = 0.98;
    let device = Device::flex().autodiff();
    let net = MlpConfig::new().with_hidden(64).with_blocks(2).init(&mut Rng::new(seed), &device);
    let mut trainer = Trainer::new(net, method, config).unwrap();
    let mut data = ToyData::new(p.toy, seed);
    let losses = (0..steps).map(|_| trainer.step(data.batch(256, &device).0, None).unwrap().expect("a finite step")).collect();
    (trainer, losses)
}

#[test]
fn imm_two_step_samples_approach_the_data() {
    let p = preset("8gaussians").unwrap();
    let held_out = ToyData::new(p.toy, 1234).sample(EVAL_N);
    let device = Device::flex();
    let (untrained, _) = train(p.imm.clone(), 0, 3);
    let before = energy_at(&p.imm, &untrained.ema, 2, &held_out, &device);
    let (trained, losses) = train(p.imm.clone(), 400, 3);
    let after = energy_at(&p.imm, &trained.ema, 2, &held_out, &device);
    assert!(losses.iter().all(|l| l.is_finite()));
    assert!(after * 4.0 < before, "2-step energy distance {before:.4} -> {after:.4}: not several-fold better");
}

#[test]
fn same_seed_same_run_other_seed_other_run() {
    let p = preset("8gaussians").unwrap();
    let (a, la) = train(p.imm.clone(), 5, 7);
    let (_, lb) = train(p.imm.clone(), 5, 7);
    let (_, lc) = train(p.imm.clone(), 5, 8);
    assert_eq!(la, lb);
    assert_ne!(la, lc);
    assert_eq!(a.nimg, 5 * 256);
}

#[test]
fn flow_matching_trains_in_the_same_loop() {
    let p = preset("8gaussians").unwrap();
    let held_out = ToyData::new(p.toy, 1234).sample(EVAL_N);
    let (untrained, _) = train(p.fm.clone(), 0, 3);
    let (trained, losses) = train(p.fm.clone(), 300, 3);
    let device = Device::flex();
    let before = energy_at(&p.fm, &untrained.ema, 8, &held_out, &device);
    let after = energy_at(&p.fm, &trained.ema, 8, &held_out, &device);
    let early: f32 = losses[..20].iter().sum::<f32>() / 20.0;
    let late: f32 = losses[losses.len() - 20..].iter().sum::<f32>() / 20.0;
    assert!(late < early, "flow-matching loss {early} -> {late}");
    assert!(after < before, "8-step energy distance {before} -> {after}");
    // Heun's second-order steps follow the learned flow more closely than Euler's in as many steps.
    let heun = FlowMatching { sampler: Sampler::Heun, ..p.fm.clone() };
    let (euler_2, heun_2) = (energy_at(&p.fm, &trained.ema, 2, &held_out, &device), energy_at(&heun, &trained.ema, 2, &held_out, &device));
    assert!(heun_2 < euler_2, "2-step energy distance: Euler {euler_2}, Heun {heun_2}");
}

/// MeanFlow, consistency training and shortcut models, with their papers' settings on flow
/// matching's network inputs, learn in the same loop: samples several-fold nearer at 1 and 2 steps
/// (consistency training at 2: its log-normal noise levels seldom reach T, where one step starts,
/// and 400 steps move its 1-step samples only from 0.029 to 0.022).
#[test]
fn the_few_step_methods_train_in_the_same_loop() {
    let p = preset("8gaussians").unwrap();
    let held_out = ToyData::new(p.toy, 1234).sample(EVAL_N);
    let device = Device::flex();
    let steps = 400;
    fn check<M: Method + Clone>(method: M, steps: usize, ks: &[usize], held_out: &[f32], device: &Device) {
        let (untrained, _) = train(method.clone(), 0, 3);
        let (trained, losses) = train(method.clone(), steps, 3);
        assert!(losses.iter().all(|l| l.is_finite()), "{}", method.name());
        for &k in ks {
            let before = energy_at(&method, &untrained.ema, k, held_out, device);
            let after = energy_at(&method, &trained.ema, k, held_out, device);
            assert!(after * 3.0 < before, "{}: {k}-step energy distance {before:.4} -> {after:.4}: not several-fold better", method.name());
        }
    }
    check(MeanFlow::on(&p.fm.precond), steps, &[1, 2], &held_out, &device);
    check(Consistency::on(&p.fm.precond, p.fm.t_max, p.fm.grid.clone(), 256 * steps as u64), steps, &[2], &held_out, &device);
    check(Shortcut::on(&p.fm.precond), steps, &[1, 2], &held_out, &device);
}

/// A deterministic method (regress the input), so that one batch and the same batch in parts
/// must give the same update.
#[derive(Clone)]
struct Regress;

impl Method for Regress {
    fn name(&self) -> &'static str {
        "regress"
    }
    fn check_batch(&self, _batch: usize) -> Result<(), imm::Error> {
        Ok(())
    }
    fn check_steps(&self, _steps: usize) -> Result<(), imm::Error> {
        Ok(())
    }
    fn sigma_data(&self) -> f64 {
        0.5
    }
    fn loss<N: imm::networks::Network>(&self, net: &N, x: Tensor<2>, _y: Option<&Labels>, _rng: &mut Rng) -> Tensor<1> {
        let [b, _] = x.dims();
        let c = Tensor::<1>::from_data(TensorData::new(vec![300f32; b], [b]), &x.device());
        (net.forward(x.clone(), c.clone(), c, None) - x).square().mean()
    }
    fn sample_path<N: imm::networks::Network>(&self, _net: &N, z: Tensor<2>, _condition: &Condition, _steps: usize, _rng: &mut Rng) -> Result<Vec<Tensor<2>>, imm::Error> {
        Ok(vec![z])
    }
}

#[test]
fn gradient_accumulation_gives_the_same_update() {
    let device = Device::flex().autodiff();
    let p = preset("moons").unwrap();
    let x = ToyData::new(p.toy, 1).batch(64, &device).0;
    let params = |accumulate: usize| {
        let mut config = p.train.clone();
        config.batch = 64;
        config.accumulate = accumulate;
        let net = MlpConfig::new().with_hidden(32).with_blocks(1).init(&mut Rng::new(4), &device);
        let mut trainer = Trainer::new(net, Regress, config).unwrap();
        let loss = trainer.step(x.clone(), None).unwrap().expect("a finite step");
        let values: Vec<f32> = imm::io::weights::named_params(&trainer.net).into_values().flat_map(|t| t.values).collect();
        (loss, values)
    };
    let (loss_1, one) = params(1);
    let (loss_4, four) = params(4);
    assert!((loss_1 - loss_4).abs() < 1e-6 * loss_1.abs().max(1.0), "{loss_1} vs {loss_4}");
    let fresh = MlpConfig::new().with_hidden(32).with_blocks(1).init(&mut Rng::new(4), &device);
    let initial: Vec<f32> = imm::io::weights::named_params(&fresh).into_values().flat_map(|t| t.values).collect();
    assert!(one.iter().zip(&initial).any(|(a, b)| (a - b).abs() > 1e-5), "the step changed the weights");
    let max = one.iter().zip(&four).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(max < 1e-6, "parameters differ by {max}");
    let mut bad = p.train.clone();
    bad.batch = 64;
    bad.accumulate = 5;
    let net = MlpConfig::new().init(&mut Rng::new(4), &device);
    assert!(Trainer::new(net, Regress, bad).is_err(), "64 does not split into 5 parts");
}

/// Three steps of `method` on moons (batch 64) over `devices` Flex devices with `accumulate` parts
/// each: the losses, the weights and the EMA weights after.
fn three_steps<M: Method>(method: M, devices: usize, accumulate: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let p = preset("moons").unwrap();
    let x = ToyData::new(p.toy, 1).batch(64, &device).0;
    let mut config = p.train.clone();
    config.batch = 64;
    config.accumulate = accumulate;
    let net = MlpConfig::new().with_hidden(32).with_blocks(1).init(&mut Rng::new(4), &device);
    let trainer = Trainer::new(net, method, config).unwrap();
    let mut trainer = trainer.with_devices(vec![device.clone(); devices]).unwrap();
    let losses = (0..3).map(|_| trainer.step(x.clone(), None).unwrap().expect("a finite step")).collect();
    let values = |net| imm::io::weights::named_params(net).into_values().flat_map(|t| t.values).collect();
    (losses, values(&trainer.net), values(&trainer.ema))
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (p, q)| m.max((p - q).abs()))
}

/// burn's multi-device strategy: one step with the batch split over two devices (here two Flex
/// devices) equals one step on one device with the same global batch.
#[test]
fn a_data_parallel_step_equals_a_single_device_step() {
    let (loss_1, one, ema_1) = three_steps(Regress, 1, 1);
    let (loss_2, two, ema_2) = three_steps(Regress, 2, 1);
    let (loss_4, four, _) = three_steps(Regress, 2, 2);
    let max = max_difference;
    assert!(loss_1[0] > loss_1[2], "three steps lowered the loss: {loss_1:?}");
    assert!(max(&loss_1, &loss_2) < 1e-6 && max(&loss_1, &loss_4) < 1e-6, "{loss_1:?} {loss_2:?} {loss_4:?}");
    assert!(max(&one, &two) < 1e-6 && max(&one, &four) < 1e-6, "{} {}", max(&one, &two), max(&one, &four));
    assert!(max(&ema_1, &ema_2) < 1e-6);
    let device = Device::flex().autodiff();
    let mut config = preset("moons").unwrap().train;
    config.batch = 64;
    let net = MlpConfig::new().init(&mut Rng::new(4), &device);
    let refused = Trainer::new(net, Regress, config).unwrap().with_devices(vec![device.clone(); 3]);
    assert!(refused.err().unwrap().0.contains("3 devices"), "64 does not split over 3 devices");
}

/// With a method that draws times and noise (IMM), two devices working at once on one part each
/// give the update of one device accumulating the same two parts, run after run.
#[test]
fn data_parallel_imm_equals_accumulating_the_same_parts() {
    let imm = preset("moons").unwrap().imm;
    let (loss_acc, acc, _) = three_steps(imm.clone(), 1, 2);
    let (loss_dp, dp, _) = three_steps(imm.clone(), 2, 1);
    let (loss_again, again, _) = three_steps(imm.clone(), 2, 1);
    let (loss_whole, _, _) = three_steps(imm, 1, 1);
    let max = max_difference;
    assert!(max(&loss_acc, &loss_dp) < 1e-6 && max(&acc, &dp) < 1e-6, "{loss_acc:?} {loss_dp:?} {}", max(&acc, &dp));
    assert_eq!((loss_dp, dp), (loss_again, again), "threads made the run depend on timing");
    assert_ne!(loss_whole, loss_acc, "one part draws from the trainer's stream, two from forks of it");
}

/// A sampling path starts at the prior noise, has one state per network evaluation and ends at
/// the sample, for both methods (the page's time slider shows these states).
#[test]
fn sample_paths_run_from_the_noise_to_the_sample() {
    let p = preset("moons").unwrap();
    let device = Device::flex();
    let net = MlpConfig::new().with_hidden(16).with_blocks(1).init(&mut Rng::new(3), &device);
    let z = || Tensor::<2>::from_data(TensorData::new(Rng::new(4).normal_vec(32, 0.5), [16, 2]), &device);
    let read = |t: Tensor<2>| t.into_data().try_into_vec::<f32>().unwrap();
    fn check<M: Method>(method: &M, net: &Mlp, z: Tensor<2>, read: impl Fn(Tensor<2>) -> Vec<f32>) {
        let path = method.sample_path(net, z.clone(), &Condition::none(), 3, &mut Rng::new(5)).unwrap();
        assert_eq!(path.len(), 4);
        let states: Vec<Vec<f32>> = path.into_iter().map(&read).collect();
        assert_eq!(states[0], read(z.clone()));
        assert!(states.windows(2).all(|w| w[0] != w[1]), "every evaluation moves the points");
        assert_eq!(states[3], read(method.sample(net, z, &Condition::none(), 3, &mut Rng::new(5)).unwrap()));
    }
    check(&p.imm, &net, z(), read);
    check(&p.fm, &net, z(), read);
    check(&MeanFlow::on(&p.fm.precond), &net, z(), read);
    check(&FlowMatching { sampler: Sampler::Heun, ..p.fm.clone() }, &net, z(), read);
    check(&Consistency::on(&p.fm.precond, p.fm.t_max, p.fm.grid.clone(), 1000), &net, z(), read);
}

/// [`Regress`] whose loss is NaN at the steps in `nan_loss`, and whose gradients are NaN (with a
/// finite loss) at the steps in `nan_grad`; steps count from 0 and every step calls the loss once.
struct Poisoned {
    calls: std::sync::atomic::AtomicUsize,
    nan_loss: Vec<usize>,
    nan_grad: Vec<usize>,
}

impl Poisoned {
    fn new(nan_loss: &[usize], nan_grad: &[usize]) -> Self {
        Self { calls: Default::default(), nan_loss: nan_loss.to_vec(), nan_grad: nan_grad.to_vec() }
    }
}

impl Method for Poisoned {
    fn name(&self) -> &'static str {
        "poisoned"
    }
    fn check_batch(&self, batch: usize) -> Result<(), imm::Error> {
        Regress.check_batch(batch)
    }
    fn check_steps(&self, steps: usize) -> Result<(), imm::Error> {
        Regress.check_steps(steps)
    }
    fn sigma_data(&self) -> f64 {
        0.5
    }
    fn loss<N: imm::networks::Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1> {
        let call = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let [b, d] = x.dims();
        let c = Tensor::<1>::from_data(TensorData::new(vec![300f32; b], [b]), &x.device());
        let out = net.forward(x.clone(), c.clone(), c, None);
        let loss = Regress.loss(net, x, y, rng);
        if self.nan_loss.contains(&call) {
            loss.mul_scalar(f32::NAN)
        } else if self.nan_grad.contains(&call) {
            // sqrt at 0: the value is 0, its gradient 0 x inf = NaN.
            loss + out.mul_scalar(0.0).abs().sqrt().sum().div_scalar((b * d) as f32)
        } else {
            loss
        }
    }
    fn sample_path<N: imm::networks::Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Vec<Tensor<2>>, imm::Error> {
        Regress.sample_path(net, z, condition, steps, rng)
    }
}

fn weights_of(net: &Mlp) -> Vec<f32> {
    imm::io::weights::named_params(net).into_values().flat_map(|t| t.values).collect()
}

fn poisoned_trainer(method: Poisoned) -> (Trainer<Mlp, Poisoned>, Tensor<2>) {
    let device = Device::flex().autodiff();
    let p = preset("moons").unwrap();
    let mut config = p.train.clone();
    config.batch = 64;
    let net = MlpConfig::new().with_hidden(32).with_blocks(1).init(&mut Rng::new(4), &device);
    (Trainer::new(net, method, config).unwrap(), ToyData::new(p.toy, 1).batch(64, &device).0)
}

/// A step whose loss or gradients are not finite changes nothing but the image count, and is counted.
#[test]
fn non_finite_steps_are_skipped_and_counted() {
    let (mut trainer, x) = poisoned_trainer(Poisoned::new(&[1], &[2]));
    assert!(trainer.step(x.clone(), None).unwrap().is_some());
    let (net, ema) = (weights_of(&trainer.net), weights_of(&trainer.ema));
    for (step, what) in [(1, "loss"), (2, "gradient")] {
        assert!(trainer.step(x.clone(), None).unwrap().is_none(), "step {step}: a NaN {what} is skipped");
        assert_eq!(weights_of(&trainer.net), net, "step {step}: the weights stay");
        assert_eq!(weights_of(&trainer.ema), ema, "step {step}: the EMA stays");
        assert_eq!(trainer.skipped(), (step as u64, step as u32));
    }
    assert_eq!(trainer.nimg, 3 * 64, "skipped images count as seen");
    assert!(trainer.check_health().is_ok(), "two in a row are tolerated");
    let loss = trainer.step(x.clone(), None).unwrap().expect("a finite step after them");
    assert!(loss.is_finite());
    assert_ne!(weights_of(&trainer.net), net, "training goes on");
    assert_eq!(trainer.skipped(), (2, 0));
}

#[derive(Default)]
struct Records(Vec<Metrics>);

impl Observer for Records {
    fn on_log(&mut self, record: &Metrics) -> Result<(), imm::Error> {
        self.0.push(record.clone());
        Ok(())
    }
}

/// [`MAX_BAD_STEPS`] skipped steps in a row stop `fit` with a message, after a metrics record
/// that counts them; the weights are those of the last good step.
#[test]
fn fit_stops_after_non_finite_steps_in_a_row() {
    let (mut trainer, _) = poisoned_trainer(Poisoned::new(&[], &[]));
    trainer.config.total_nimg = 100 * 64;
    trainer.config.log_every_nimg = 2 * 64;
    let mut data = NanAt { data: ToyData::new(preset("moons").unwrap().toy, 1), bad: (3..100).collect(), drawn: 0 };
    let mut records = Records::default();
    let mut good = Vec::new();
    let error = fit(&mut trainer, &mut data, || 0.0, &mut records).err().expect("fit stops");
    assert!(error.0.contains(&format!("not finite in {MAX_BAD_STEPS} steps in a row")), "{error}");
    assert_eq!(trainer.nimg, (3 + MAX_BAD_STEPS as u64) * 64, "it stopped at the fifth bad step");
    let skipped: u64 = records.0.iter().map(|r| r.skipped).sum();
    assert_eq!(skipped, MAX_BAD_STEPS as u64, "the records count the skipped steps: {:?}", records.0);
    assert!(records.0.last().unwrap().nimg == trainer.nimg, "a record at the stop");
    assert!(records.0.iter().all(|r| r.loss.is_finite() || r.skipped > 0));
    good.extend(weights_of(&trainer.net));
    assert!(good.iter().all(|v| v.is_finite()));
}

/// 2D data whose batches at the steps in `bad` (counting from 0) are NaN: a step that is not
/// finite wherever it runs, however often it is run again.
struct NanAt {
    data: ToyData,
    bad: Vec<usize>,
    drawn: usize,
}

impl Dataset for NanAt {
    fn dim(&self) -> usize {
        2
    }
    fn sample(&mut self, n: usize) -> Vec<f32> {
        let values = self.data.sample(n);
        self.drawn += 1;
        if self.bad.contains(&(self.drawn - 1)) { vec![f32::NAN; values.len()] } else { values }
    }
}

/// Trains 30 steps of batch 64 with a record every `record_steps` steps (the loop's chunks),
/// with NaN batches at `bad`: the trainer and its records.
fn fit_with_bad_batches(record_steps: u64, bad: &[usize]) -> (Trainer<Mlp, Poisoned>, Vec<Metrics>) {
    let (mut trainer, _) = poisoned_trainer(Poisoned::new(&[], &[]));
    trainer.config.total_nimg = 30 * 64;
    trainer.config.log_every_nimg = record_steps * 64;
    let mut data = NanAt { data: ToyData::new(preset("moons").unwrap().toy, 1), bad: bad.to_vec(), drawn: 0 };
    let mut records = Records::default();
    fit(&mut trainer, &mut data, || 0.0, &mut records).unwrap();
    (trainer, records.0)
}

/// The loop reads the device once per chunk (a chunk ends at each record), and once more after
/// each step that was not finite; a chunk that meets one goes back, skips it and goes on, and
/// ends exactly where steps checked one at a time end.
#[test]
fn chunks_read_once_and_skip_bad_steps_as_single_steps_do() {
    let (clean, records) = fit_with_bad_batches(10, &[]);
    assert_eq!(clean.device_reads(), 3, "30 steps, a record every 10: one read per record");
    assert_eq!(records.len(), 3);
    let bad = [3, 4, 12];
    let (chunked, records) = fit_with_bad_batches(10, &bad);
    // Chunk 1 reads, finds step 3, reads the rest again, finds step 4, reads the rest; chunk 2
    // reads twice; chunk 3 once.
    assert_eq!(chunked.device_reads(), 6);
    assert_eq!(records.iter().map(|r| r.skipped).collect::<Vec<_>>(), [2, 1, 0]);
    let (single, single_records) = fit_with_bad_batches(1, &bad);
    assert_eq!(single.device_reads(), 30);
    assert_eq!(single_records.iter().map(|r| r.skipped).sum::<u64>(), 3);
    assert_eq!((chunked.nimg, chunked.skipped()), (single.nimg, single.skipped()));
    assert_eq!(weights_of(&chunked.net), weights_of(&single.net), "the same weights");
    assert_eq!(weights_of(&chunked.ema), weights_of(&single.ema), "the same EMA");
    assert_ne!(weights_of(&chunked.net), weights_of(&clean.net), "the bad steps were skipped");
    // The mean loss of a record is over its applied steps.
    let mean = |r: &[Metrics]| r.iter().map(|m| m.loss).sum::<f64>();
    let per_step: f64 = single_records[..10].iter().filter(|m| m.skipped == 0).map(|m| m.loss).sum::<f64>() / 8.0;
    assert!((records[0].loss - per_step).abs() < 1e-6 * per_step.abs(), "{} against {per_step}", records[0].loss);
    assert!(mean(&records).is_finite());
}

/// A snapshot brings back the weights, the EMA, the optimizer moments, the counters and the
/// stream: the steps after a restore repeat the steps after the snapshot (how the page undoes
/// steps whose numbers were not finite).
#[test]
fn restore_undoes_steps_exactly() {
    let (mut trainer, x) = poisoned_trainer(Poisoned::new(&[], &[]));
    trainer.step(x.clone(), None).unwrap().expect("a finite step");
    let snapshot = trainer.snapshot();
    let (net, ema, nimg) = (weights_of(&trainer.net), weights_of(&trainer.ema), trainer.nimg);
    let first: Vec<f32> = (0..2).map(|_| trainer.step(x.clone(), None).unwrap().unwrap()).collect();
    let after = weights_of(&trainer.net);
    assert_ne!(after, net);
    trainer.restore(snapshot);
    assert_eq!((weights_of(&trainer.net), weights_of(&trainer.ema), trainer.nimg), (net, ema, nimg));
    let again: Vec<f32> = (0..2).map(|_| trainer.step(x.clone(), None).unwrap().unwrap()).collect();
    assert_eq!(again, first, "the same losses");
    assert_eq!(weights_of(&trainer.net), after, "the same weights, Adam's moments included");
}

/// Ranks that are threads of this process: each deposits its values, waits for the others, and
/// reads the sum (or all of them) in rank order, as MPI's all-reduce, all-gather and broadcast do.
struct ThreadRanks {
    rank: usize,
    count: usize,
    shared: std::sync::Arc<(std::sync::Mutex<Vec<Vec<f32>>>, std::sync::Barrier)>,
}

impl ThreadRanks {
    fn group(count: usize) -> Vec<ThreadRanks> {
        let shared = std::sync::Arc::new((std::sync::Mutex::new(vec![Vec::new(); count]), std::sync::Barrier::new(count)));
        (0..count).map(|rank| ThreadRanks { rank, count, shared: shared.clone() }).collect()
    }

    /// Every rank's values, in rank order.
    fn exchange(&self, values: Vec<f32>) -> Vec<Vec<f32>> {
        let (slots, barrier) = &*self.shared;
        slots.lock().unwrap()[self.rank] = values;
        barrier.wait();
        let all = slots.lock().unwrap().clone();
        barrier.wait();
        all
    }
}

impl imm::training::ranks::Ranks for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }
    fn count(&self) -> usize {
        self.count
    }
    fn sum(&self, values: &mut [f32]) {
        let all = self.exchange(values.to_vec());
        for (i, v) in values.iter_mut().enumerate() {
            *v = all.iter().map(|r| r[i]).sum();
        }
    }
    fn gather(&self, value: u64) -> Vec<u64> {
        self.exchange(vec![f32::from_bits(value as u32), f32::from_bits((value >> 32) as u32)])
            .iter()
            .map(|r| r[0].to_bits() as u64 | (r[1].to_bits() as u64) << 32)
            .collect()
    }
    fn broadcast(&self, bytes: &[u8]) -> Vec<u8> {
        self.exchange(bytes.iter().map(|&b| b as f32).collect())[0].iter().map(|&b| b as u8).collect()
    }
}

/// Three IMM steps on `ranks` thread-ranks of `devices` devices each: rank 0's losses and weights.
fn three_steps_on_ranks(ranks: usize, devices: usize) -> (Vec<f32>, Vec<f32>) {
    let mut results: Vec<_> = std::thread::scope(|scope| {
        let workers: Vec<_> = ThreadRanks::group(ranks)
            .into_iter()
            .map(|r| {
                scope.spawn(move || {
                    let device = Device::flex().autodiff();
                    let p = preset("moons").unwrap();
                    let x = ToyData::new(p.toy, 1).batch(64, &device).0;
                    let mut config = p.train.clone();
                    config.batch = 64;
                    let net = MlpConfig::new().with_hidden(32).with_blocks(1).init(&mut Rng::new(4), &device);
                    let trainer = Trainer::new(net, p.imm.clone(), config).unwrap().with_devices(vec![device.clone(); devices]).unwrap();
                    let mut trainer = trainer.with_ranks(Box::new(r)).unwrap();
                    let losses: Vec<f32> = (0..3).map(|_| trainer.step(x.clone(), None).unwrap().expect("a finite step")).collect();
                    trainer.check_ranks().unwrap();
                    (losses, imm::io::weights::named_params(&trainer.net).into_values().flat_map(|t| t.values).collect::<Vec<f32>>())
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    results.swap_remove(0)
}

/// Two ranks train what one process accumulating their two parts trains, over three steps (Adam's
/// second and third steps see the gradients' scale), and so do two ranks of two devices each.
#[test]
fn ranks_equal_one_process_accumulating_their_parts() {
    let imm = preset("moons").unwrap().imm;
    let (loss_acc, acc, _) = three_steps(imm.clone(), 1, 2);
    let (loss_ranks, ranks) = three_steps_on_ranks(2, 1);
    let max = max_difference;
    assert!(max(&loss_acc, &loss_ranks) < 1e-6 && max(&acc, &ranks) < 1e-6, "{loss_acc:?} {loss_ranks:?} {}", max(&acc, &ranks));
    let (loss_acc4, acc4, _) = three_steps(imm.clone(), 1, 4);
    let (loss_ranks4, ranks4) = three_steps_on_ranks(2, 2);
    assert!(max(&loss_acc4, &loss_ranks4) < 1e-6 && max(&acc4, &ranks4) < 1e-6, "{loss_acc4:?} {loss_ranks4:?} {}", max(&acc4, &ranks4));
    let device = Device::flex().autodiff();
    let mut config = preset("moons").unwrap().train;
    config.batch = 64;
    let net = MlpConfig::new().init(&mut Rng::new(4), &device);
    let three = ThreadRanks::group(3).swap_remove(0);
    let refused = Trainer::new(net, imm, config).unwrap().with_ranks(Box::new(three));
    assert!(refused.err().unwrap().0.contains("3 ranks"), "64 does not split over 3 ranks");
}

/// Ranks whose weights differ (here: initialised from different seeds) are stopped, every one of
/// them, by a message that names the rank and the step.
#[test]
fn ranks_with_different_weights_are_stopped() {
    let messages: Vec<String> = std::thread::scope(|scope| {
        let workers: Vec<_> = ThreadRanks::group(2)
            .into_iter()
            .map(|r| {
                scope.spawn(move || {
                    let device = Device::flex().autodiff();
                    let p = preset("moons").unwrap();
                    let mut config = p.train.clone();
                    config.batch = 64;
                    let net = MlpConfig::new().with_hidden(32).with_blocks(1).init(&mut Rng::new(4 + r.rank as u64), &device);
                    let mut trainer = Trainer::new(net, p.imm.clone(), config).unwrap().with_ranks(Box::new(r)).unwrap();
                    trainer.step(ToyData::new(p.toy, 1).batch(64, &device).0, None).unwrap().expect("a finite step");
                    trainer.check_ranks().unwrap_err().0
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for message in messages {
        assert!(message.contains("after step 1 (64 images) the weights of rank 1 differ from rank 0's"), "{message}");
    }
}

/// Every name builds its method (the page's picker and the command line go through `named`), and
/// an unknown one is refused with the names there are.
#[test]
fn every_method_is_built_by_its_name() {
    use imm::method::AnyMethod;
    let p = imm::training::presets::preset("moons").unwrap();
    for name in AnyMethod::NAMES {
        let method = AnyMethod::named(name, &p.imm, &p.fm, p.train.total_nimg).unwrap();
        assert_eq!(method.name(), name);
        method.validate().unwrap();
    }
    let titles = AnyMethod::NAMES.map(|name| AnyMethod::named(name, &p.imm, &p.fm, 1).unwrap().title());
    assert_eq!(titles, ["IMM", "flow matching", "MeanFlow", "consistency training", "shortcut model"]);
    let refused = AnyMethod::named("rectified-flow", &p.imm, &p.fm, 1).unwrap_err();
    assert!(refused.0.contains("unknown method 'rectified-flow'") && refused.0.contains("shortcut"), "{refused}");
}
