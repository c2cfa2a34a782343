//! The training loop. It knows a [`Method`] (a loss and a sampler), a [`Network`] and a
//! [`Dataset`]; nothing here is specific to IMM. Steps run in chunks that never wait for the
//! device: a chunk's losses and finiteness checks are read once, at its end
//! ([`Trainer::finish_chunk`]); a step whose loss or gradients were not finite is then undone
//! (the chunk goes back to its start and runs again up to it), skipped and counted, and
//! [`MAX_BAD_STEPS`] of them in a row stop training. [`fit`] (the command line, the tests) and the
//! page run the same chunks. Natively the read blocks at the chunk's end, so the device drains
//! once per chunk (at most [`MAX_CHUNK`] steps); the page's read is asynchronous.

use std::borrow::BorrowMut;
use std::collections::HashMap;
use std::future::Future;

use burn::module::{ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, MultiGradientsParams};
use burn::tensor::{Bytes, Device, Tensor};
use serde::{Deserialize, Serialize};

#[cfg(not(target_family = "wasm"))]
use crate::data::Dataset;
use crate::method::Method;
use crate::networks::Network;
use crate::training::radam::RAdam;
use crate::training::ranks::{Ranks, check_same_weights, sum_gradients};
use crate::{Error, ErrorKind, Labels, Rng};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Adam,
    Radam,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub batch: usize,
    /// Training length in images.
    pub total_nimg: u64,
    pub lr: f64,
    pub optimizer: OptimizerKind,
    /// EMA decay per step for the evaluation weights, warmed up as min(ema, (1 + n) / (10 + n)).
    pub ema: f64,
    /// One metrics record per this many images.
    pub log_every_nimg: u64,
    pub seed: u64,
    /// Split each batch into this many equal parts and sum their gradients (same update, less memory).
    #[serde(default = "one")]
    pub accumulate: usize,
}

fn one() -> usize {
    1
}

impl TrainConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if self.batch == 0 || self.total_nimg == 0 || self.log_every_nimg == 0 || self.accumulate == 0 {
            return Err(Error::new("batch, training length, log interval and accumulation must be positive"));
        }
        if self.batch % self.accumulate != 0 {
            return Err(Error::new(format!(
                "the batch ({}) must split into {} equal parts for gradient accumulation",
                self.batch, self.accumulate
            )));
        }
        if !(self.lr > 0.0) || !(0.0..1.0).contains(&self.ema) {
            return Err(Error::new(format!("need lr > 0 and 0 <= ema < 1, got lr = {} and ema = {}", self.lr, self.ema)));
        }
        Ok(())
    }
}

/// One metrics record: a line of metrics.jsonl, a terminal line, a point on the page's chart.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Images seen so far.
    pub nimg: u64,
    /// Mean loss of the steps taken since the previous record (NaN, written null, when every
    /// one was skipped).
    #[serde(deserialize_with = "nan_if_null")]
    pub loss: f64,
    pub lr: f64,
    /// Wall-clock seconds per thousand training images since the previous record.
    pub sec_per_kimg: f64,
    /// Steps skipped since the previous record because their loss or gradients were not finite.
    #[serde(default)]
    pub skipped: u64,
}

/// A number, or NaN where JSON has null (how serde_json writes NaN).
fn nan_if_null<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Steps in a row with a non-finite loss or gradient after which [`fit`] stops.
pub const MAX_BAD_STEPS: u32 = 5;

/// The sum of every gradient's sum, plus `loss`: finite exactly when all of them are (up to an
/// overflow of the sum, which is no usable gradient either).
struct FiniteCheck<'a> {
    grads: &'a GradientsParams,
    sum: Tensor<1>,
}

impl ModuleVisitor for FiniteCheck<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.get::<D>(param.id) {
            // A reduction along one axis is one launch on GPUs; `sum()` also fills its output first.
            let part = grad.flatten::<1>(0, D - 1).sum_dim(0).to_device(&self.sum.device());
            self.sum = self.sum.clone() + part;
        }
    }
}

fn finite_check<N: Network>(net: &N, grads: &GradientsParams, loss: Tensor<1>) -> Tensor<1> {
    let mut check = FiniteCheck { grads, sum: loss };
    net.visit(&mut check);
    check.sum
}

/// Gradients where they were computed: on the weights' device, or one set per data-parallel device.
enum Grads {
    One(GradientsParams),
    Many(Vec<(GradientsParams, Device)>),
}

/// One batch's loss and gradients, not yet applied: [`Trainer::gradients`], then [`Trainer::apply`]
/// (the loop applies them before it reads their check).
pub struct Gradients {
    /// The batch loss, detached: [1].
    pub loss: Tensor<1>,
    /// Finite exactly when the loss and every gradient are: [1].
    pub check: Tensor<1>,
    grads: Grads,
    batch: usize,
}

/// What a step changes, kept without copying (tensors are shared, never written in place):
/// [`Trainer::restore`] goes back to it.
#[derive(Clone)]
pub struct Snapshot<N> {
    net: N,
    ema: N,
    optim: ModuleOptimizer,
    progress: Progress,
    /// The skip counters: (in all, in a row).
    skips: (u64, u32),
}

/// Steps applied without reading the device, to be read together: [`Trainer::launch`], one read
/// of `values`, then [`Trainer::settle`].
pub struct Chunk<N> {
    /// Each step's loss, then each step's finiteness check, detached: [2 x steps].
    pub values: Tensor<1>,
    /// The state before the chunk and its batches, to run it again up to a step that failed.
    start: Snapshot<N>,
    batches: Vec<(Tensor<2>, Option<Labels>)>,
    /// The stream after each step, where a skipped step leaves it.
    streams: Vec<Rng>,
}

/// The most steps of one chunk: its batches stay in memory until it is read.
pub const MAX_CHUNK: usize = 32;

/// What a chunk's values are called in a failed read.
pub const LOSSES: &str = "the losses";

/// What the next metrics record sums: applied steps and their losses, skips, and where the
/// previous record was.
#[derive(Clone, Debug, Default)]
struct Tally {
    loss_sum: f64,
    applied: u64,
    skipped: u64,
    nimg: u64,
    time: f64,
}

/// Float parameters of a module, flattened, by id.
struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val().inner();
        let n = value.shape().num_elements();
        self.0.insert(param.id, value.reshape([n]));
    }
}

/// ema <- beta ema + (1 - beta) current, matched by parameter id.
struct EmaUpdate {
    current: HashMap<ParamId, Tensor<1>>,
    beta: f32,
}

impl ModuleMapper for EmaUpdate {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(current) = self.current.remove(&param.id) else {
            return param;
        };
        let beta = self.beta;
        param.map(|ema| {
            let shape = ema.shape();
            ema.mul_scalar(beta) + current.reshape(shape).mul_scalar(1.0 - beta)
        })
    }
}

/// The loss of each part of a batch with its gradients, summed; each part's loss is divided by
/// `parts`, the count over all devices, so that the sums over devices make the batch mean. `rng`
/// is the stream each part draws from (owned, or the trainer's own).
fn backward_parts<N: Network, M: Method, R: BorrowMut<Rng>>(
    method: &M,
    net: &N,
    shares: impl IntoIterator<Item = (Tensor<2>, Option<Labels>, R)>,
    parts: usize,
) -> (Tensor<1>, GradientsParams) {
    let mut sum = GradientsAccumulator::new();
    let mut total: Option<Tensor<1>> = None;
    for (part, y, mut rng) in shares {
        let loss = method.loss(net, part, y.as_ref(), rng.borrow_mut()).div_scalar(parts as f32);
        sum.accumulate(net, GradientsParams::from_grads(loss.backward(), net));
        let loss = loss.inner();
        total = Some(total.map_or(loss.clone(), |t| t + loss));
    }
    (total.expect("at least one part"), sum.grads())
}

/// A batch and its labels in `parts` equal parts, in order.
fn split(x: Tensor<2>, y: Option<&Labels>, parts: usize) -> Vec<(Tensor<2>, Option<Labels>)> {
    let size = x.dims()[0] / parts;
    x.chunk(parts, 0)
        .into_iter()
        .enumerate()
        .map(|(i, part)| (part, y.map(|y| y.slice(i * size, (i + 1) * size))))
        .collect()
}

/// The streams a run draws from its seed, in this order: its initial weights', its data's seed,
/// then the rest (what else it samples). The command line and the page start runs from it, so
/// that the same seed trains the same weights.
pub struct Seeds {
    pub weights: Rng,
    pub data: u64,
    pub rest: Rng,
}

impl Seeds {
    pub fn new(seed: u64) -> Self {
        let mut rest = Rng::new(seed);
        let weights = rest.fork();
        let data = rest.next_u64();
        Self { weights, data, rest }
    }
}

/// What, besides weights and optimizer moments, a resumed run needs to continue exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub nimg: u64,
    pub steps: u64,
    pub rng: Rng,
}

pub struct Trainer<N: Network, M: Method> {
    /// The trained weights (autodiff).
    pub net: N,
    /// Their exponential moving average, for evaluation (no autodiff).
    pub ema: N,
    pub method: M,
    pub config: TrainConfig,
    /// Images seen.
    pub nimg: u64,
    steps: u64,
    optim: ModuleOptimizer,
    rng: Rng,
    /// Data-parallel devices ([`Trainer::with_devices`]); empty for the weights' own device.
    devices: Vec<Device>,
    /// Data-parallel processes ([`Trainer::with_ranks`]).
    ranks: Option<Box<dyn Ranks>>,
    /// Steps skipped for non-finite numbers: in all, and the latest run of them.
    skipped: u64,
    bad_in_a_row: u32,
    /// Since the previous metrics record.
    tally: Tally,
    /// Chunks settled so far: reads of the device (one per chunk, one more after each step that
    /// was not finite).
    reads: u64,
}

impl<N: Network, M: Method> Trainer<N, M> {
    pub fn new(net: N, method: M, config: TrainConfig) -> Result<Self, Error> {
        config.validate()?;
        method.check_batch(config.batch / config.accumulate)?;
        let optim = match config.optimizer {
            OptimizerKind::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
            OptimizerKind::Radam => ModuleOptimizer::from(RAdam::default()),
        };
        Ok(Self {
            ema: net.valid(),
            net,
            method,
            rng: Rng::new(config.seed ^ 0x7a1e),
            config,
            nimg: 0,
            steps: 0,
            optim,
            devices: Vec::new(),
            ranks: None,
            skipped: 0,
            bad_in_a_row: 0,
            tally: Tally::default(),
            reads: 0,
        })
    }

    /// Trains data-parallel over `devices` (autodiff devices, e.g. one per GPU): each step splits
    /// its batch by groups into one share per device (times `accumulate`), runs each share on a
    /// replica of the weights there, and burn's multi-device optimizer step sums the gradients and
    /// updates once: the same update as on one device.
    pub fn with_devices(mut self, devices: Vec<Device>) -> Result<Self, Error> {
        self.devices = devices;
        self.check_parts()?;
        Ok(self)
    }

    /// Trains data-parallel over processes: the batch splits into one share per rank (each then
    /// split over its devices and accumulation steps); gradients are summed over the ranks and
    /// every rank applies the same update. Every rank must draw the same batches.
    pub fn with_ranks(mut self, ranks: Box<dyn Ranks>) -> Result<Self, Error> {
        self.ranks = Some(ranks);
        self.check_parts()?;
        Ok(self)
    }

    /// The batch must split into equal parts over ranks, devices and accumulation steps.
    fn check_parts(&self) -> Result<(), Error> {
        let ranks = self.ranks.as_ref().map_or(1, |r| r.count());
        let devices = self.devices.len().max(1);
        let parts = self.config.accumulate * devices * ranks;
        if self.config.batch % parts != 0 {
            let over_ranks = if ranks > 1 { format!("{ranks} ranks x ") } else { String::new() };
            return Err(Error::new(format!(
                "the batch ({}) must split into {parts} equal parts ({over_ranks}{devices} devices x {} accumulation steps)",
                self.config.batch, self.config.accumulate
            )));
        }
        self.method.check_batch(self.config.batch / parts)
    }

    /// One optimizer step on one batch, as a chunk of one: the loss, or None when the step was
    /// skipped for a non-finite loss or gradient. Reads the device once.
    ///
    /// # Shapes
    /// - x: [B, D]; y: B labels, for a network with labels
    pub fn step(&mut self, x: Tensor<2>, y: Option<Labels>) -> Result<Option<f32>, Error> {
        let chunk = self.launch(vec![(x, y)]);
        let values = crate::floats(chunk.values.clone(), LOSSES)?;
        let loss = values[1].is_finite().then_some(values[0]);
        let again = self.settle(chunk, &values);
        debug_assert!(again.is_none(), "a chunk of one settles at once");
        Ok(loss)
    }

    /// Applies a step per batch without reading the device (each step's finiteness is checked
    /// when [`Trainer::settle`] reads the chunk's values).
    ///
    /// # Shapes
    /// - batches: each [B, D] with B labels, for a network with labels
    pub fn launch(&mut self, batches: Vec<(Tensor<2>, Option<Labels>)>) -> Chunk<N> {
        let start = self.snapshot();
        let (mut losses, mut checks, mut streams) = (Vec::new(), Vec::new(), Vec::new());
        for (x, y) in &batches {
            let gradients = self.gradients(x.clone(), y.clone());
            streams.push(self.rng.clone());
            checks.push(gradients.check.clone());
            losses.push(self.apply(gradients));
        }
        losses.extend(checks);
        Chunk { values: Tensor::cat(losses, 0), start, batches, streams }
    }

    /// Takes the chunk's values as read: when a step was not finite, goes back to the chunk's
    /// start, applies the steps before it again, skips it and counts it, and returns the rest of
    /// the chunk, launched, to be read and settled in turn (None once every step is settled, or
    /// when [`MAX_BAD_STEPS`] in a row stop training).
    pub fn settle(&mut self, chunk: Chunk<N>, values: &[f32]) -> Option<Chunk<N>> {
        self.reads += 1;
        let steps = chunk.batches.len();
        let (losses, checks) = values.split_at(steps);
        let Some(bad) = checks.iter().position(|c| !c.is_finite()) else {
            self.tally.loss_sum += losses.iter().map(|&l| l as f64).sum::<f64>();
            self.tally.applied += steps as u64;
            return None;
        };
        self.restore(chunk.start);
        let mut batches = chunk.batches.into_iter();
        // Steps are deterministic: applied again on the same batches from the same state, the
        // steps before the bad one give the same weights without a check.
        for (x, y) in batches.by_ref().take(bad) {
            let gradients = self.gradients(x, y);
            self.apply(gradients);
        }
        self.tally.loss_sum += losses[..bad].iter().map(|&l| l as f64).sum::<f64>();
        self.tally.applied += bad as u64;
        let (x, _) = batches.next().expect("the bad step is in the chunk");
        // Skipped as a step checked alone is: its images count, the stream moves past its draws.
        self.rng = chunk.streams[bad].clone();
        self.skip(x.dims()[0]);
        self.tally.skipped += 1;
        let rest: Vec<_> = batches.collect();
        (!rest.is_empty() && self.check_health().is_ok()).then(|| self.launch(rest))
    }

    /// Settles a launched chunk (see [`Trainer::launch`]): reads its values once with `read` (a
    /// blocking read natively, an asynchronous one on the page), reading again only after a step
    /// that was not finite.
    pub async fn finish_chunk<F>(&mut self, chunk: Chunk<N>, mut read: impl FnMut(Tensor<1>) -> F) -> Result<(), Error>
    where
        F: Future<Output = Result<Vec<f32>, Error>>,
    {
        let mut chunk = Some(chunk);
        while let Some(pending) = chunk {
            let values = read(pending.values.clone()).await?;
            chunk = self.settle(pending, &values);
        }
        Ok(())
    }

    /// Trains on `batches` as one chunk, with blocking reads.
    #[cfg(not(target_family = "wasm"))]
    pub fn run_chunk(&mut self, batches: Vec<(Tensor<2>, Option<Labels>)>) -> Result<(), Error> {
        let chunk = self.launch(batches);
        ready_now(self.finish_chunk(chunk, |values| std::future::ready(crate::floats(values, LOSSES))))
    }

    /// Steps to the next metrics record (at a multiple of the log interval, or the end of
    /// training), at most [`MAX_CHUNK`]: the size of the next chunk.
    pub fn steps_to_record(&self) -> usize {
        let (batch, every, total) = (self.config.batch as u64, self.config.log_every_nimg, self.config.total_nimg);
        let mut n = 1;
        while n < MAX_CHUNK as u64 {
            let at = self.nimg + n * batch;
            if at >= total || at / every != (at - batch) / every {
                break;
            }
            n += 1;
        }
        n as usize
    }

    /// Whether the next metrics record is due: a multiple of the log interval was passed since the
    /// last one, training reached its end, or it must stop.
    pub fn record_due(&self) -> bool {
        let every = self.config.log_every_nimg;
        self.nimg / every != self.tally.nimg / every || self.nimg >= self.config.total_nimg || self.check_health().is_err()
    }

    /// The metrics record of the steps since the previous one, at `now` seconds (a clock of the
    /// caller's; [`Trainer::start_clock`] sets where it starts), and starts the next.
    pub fn record(&mut self, now: f64) -> Metrics {
        let t = std::mem::take(&mut self.tally);
        self.tally = Tally { nimg: self.nimg, time: now, ..Tally::default() };
        Metrics {
            nimg: self.nimg,
            loss: if t.applied > 0 { t.loss_sum / t.applied as f64 } else { f64::NAN },
            lr: self.config.lr,
            sec_per_kimg: (now - t.time) / ((self.nimg - t.nimg) as f64 / 1000.0),
            skipped: t.skipped,
        }
    }

    /// Starts the next metrics record's clock at `now` (the time between records that is not
    /// training's, the page's drawing for one, is not counted).
    pub fn start_clock(&mut self, now: f64) {
        self.tally.time = now;
    }

    /// The loss and gradients of one batch, with their finiteness check, on the devices (summed
    /// over the ranks, when there are several).
    ///
    /// # Shapes
    /// - x: [B, D]; y: B labels, for a network with labels
    pub fn gradients(&mut self, x: Tensor<2>, y: Option<Labels>) -> Gradients {
        self.method.at_nimg(self.nimg);
        let [batch, _] = x.dims();
        let home = x.device();
        let devices = self.devices.len().max(1);
        let (rank, ranks) = self.ranks.as_ref().map_or((0, 1), |r| (r.rank(), r.count()));
        let local = self.config.accumulate * devices;
        let parts = local * ranks;
        // One part draws from the trainer's stream. Several draw from a stream each, forked in part
        // order on every rank, so that the update depends on the part count only.
        let (loss, grads) = if parts == 1 {
            let (loss, grads) = backward_parts(&self.method, &self.net, [(x, y, &mut self.rng)], 1);
            (loss, Grads::One(grads))
        } else {
            // Every part's stream is forked before this rank takes its own, so all ranks advance alike.
            let all: Vec<_> = split(x, y.as_ref(), parts).into_iter().map(|(part, y)| (part, y, Rng::new(self.rng.next_u64()))).collect();
            let mine: Vec<_> = all.into_iter().skip(rank * local).take(local).collect();
            if devices == 1 {
                let (loss, grads) = backward_parts(&self.method, &self.net, mine, parts);
                (loss, Grads::One(grads))
            } else {
                let (loss, grads) = self.data_parallel(mine, parts, &home);
                (loss, Grads::Many(grads))
            }
        };
        let (loss, grads) = match &self.ranks {
            None => (loss, grads),
            Some(ranks) => {
                let sets: Vec<GradientsParams> = match grads {
                    Grads::One(grads) => vec![grads],
                    Grads::Many(grads) => grads.into_iter().map(|(g, _)| g).collect(),
                };
                // On the gradients' own (non-autodiff) device, which the loss is on.
                let device = loss.device();
                let (loss, grads) = sum_gradients(ranks.as_ref(), &self.net, &sets, loss, &device);
                (loss, Grads::One(grads))
            }
        };
        let check = match &grads {
            Grads::One(g) => finite_check(&self.net, g, loss.clone()),
            Grads::Many(grads) => grads.iter().fold(loss.clone(), |sum, (g, _)| finite_check(&self.net, g, sum)),
        };
        Gradients { loss, check, grads, batch }
    }

    /// Applies the update of `gradients` and the EMA; returns the batch loss.
    pub fn apply(&mut self, gradients: Gradients) -> Tensor<1> {
        self.nimg += gradients.batch as u64;
        self.bad_in_a_row = 0;
        let lr = self.config.lr;
        self.net = match gradients.grads {
            Grads::One(grads) => self.optim.step(lr, self.net.clone(), grads),
            Grads::Many(grads) => {
                // Each parameter's update runs where its gradients were summed; bring them home after.
                let home = gradients.loss.device();
                self.optim.step_multi(lr, self.net.clone(), MultiGradientsParams { grads }).fork(&home)
            }
        };
        self.steps += 1;
        let n = self.steps as f64;
        let beta = self.config.ema.min((1.0 + n) / (10.0 + n)) as f32;
        let mut current = Collect(HashMap::new());
        self.net.visit(&mut current);
        self.ema = self.ema.clone().map(&mut EmaUpdate { current: current.0, beta });
        gradients.loss
    }

    /// Counts a skipped step of `batch` images.
    fn skip(&mut self, batch: usize) {
        self.nimg += batch as u64;
        self.skipped += 1;
        self.bad_in_a_row += 1;
    }

    /// The state now, to go back to with [`Trainer::restore`]: how a chunk undoes steps whose
    /// numbers turn out not finite when it reads them.
    pub fn snapshot(&self) -> Snapshot<N> {
        Snapshot {
            net: self.net.clone(),
            ema: self.ema.clone(),
            optim: self.optim.clone(),
            progress: self.progress(),
            skips: (self.skipped, self.bad_in_a_row),
        }
    }

    pub fn restore(&mut self, snapshot: Snapshot<N>) {
        (self.net, self.ema, self.optim) = (snapshot.net, snapshot.ema, snapshot.optim);
        let Progress { nimg, steps, rng } = snapshot.progress;
        (self.nimg, self.steps, self.rng) = (nimg, steps, rng);
        (self.skipped, self.bad_in_a_row) = snapshot.skips;
    }

    /// How many times the loop has read the device so far (`imm bench` reports it per step).
    pub fn device_reads(&self) -> u64 {
        self.reads
    }

    /// Steps skipped so far in this session for non-finite numbers, and how many of the latest
    /// steps in a row were.
    pub fn skipped(&self) -> (u64, u32) {
        (self.skipped, self.bad_in_a_row)
    }

    /// Fails once [`MAX_BAD_STEPS`] steps in a row were skipped: the numbers will not recover.
    pub fn check_health(&self) -> Result<(), Error> {
        if self.bad_in_a_row < MAX_BAD_STEPS {
            return Ok(());
        }
        Err(Error::of_kind(
            ErrorKind::Stopped,
            format!(
                "training stopped at {} images: the loss or a gradient was not finite in {} steps in a row \
                 (they were skipped, the weights are those of the last good step); a lower learning rate may help",
                self.nimg, self.bad_in_a_row
            ),
        ))
    }

    /// Forward and backward passes of a batch's parts over the devices, one thread each so that
    /// the devices (or CPU cores) work at once. Part i goes to device i mod n: the result does not
    /// depend on thread timing and equals one device accumulating the same parts.
    fn data_parallel(
        &self,
        mine: Vec<(Tensor<2>, Option<Labels>, Rng)>,
        parts: usize,
        home: &Device,
    ) -> (Tensor<1>, Vec<(GradientsParams, Device)>) {
        let n = self.devices.len();
        let mut shares: Vec<Vec<_>> = vec![Vec::new(); n];
        for (i, (part, y, rng)) in mine.into_iter().enumerate() {
            shares[i % n].push((part.to_device(&self.devices[i % n]), y, rng));
        }
        let method = &self.method;
        let results: Vec<(Tensor<1>, GradientsParams, Device)> = std::thread::scope(|scope| {
            let workers: Vec<_> = shares
                .into_iter()
                .zip(&self.devices)
                .map(|(share, device)| {
                    let net = self.net.clone().fork(device);
                    scope.spawn(move || {
                        let (loss, grads) = backward_parts(method, &net, share, parts);
                        (loss, grads, device.clone())
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        });
        let mut loss: Option<Tensor<1>> = None;
        let mut grads = Vec::with_capacity(n);
        for (part_loss, part_grads, device) in results {
            let part_loss = part_loss.to_device(home);
            loss = Some(loss.map_or(part_loss.clone(), |l| l + part_loss));
            grads.push((part_grads, device));
        }
        (loss.expect("at least one device"), grads)
    }

    /// Fails on every rank unless all hold the same weights (they apply the same updates, so they
    /// do unless a rank computes differently). Every rank calls it at the same steps.
    pub fn check_ranks(&self) -> Result<(), Error> {
        match &self.ranks {
            Some(ranks) => check_same_weights(ranks.as_ref(), &self.net, self.steps, self.nimg),
            None => Ok(()),
        }
    }

    pub fn progress(&self) -> Progress {
        Progress { nimg: self.nimg, steps: self.steps, rng: self.rng.clone() }
    }

    /// The optimizer's moments (burn's burnpack format), keyed by parameter id.
    pub fn optimizer_bytes(&self) -> Result<Vec<u8>, Error> {
        let bytes = self.optim.into_bytes().map_err(|e| Error::new(format!("cannot save the optimizer state: {e:?}")))?;
        Ok(bytes.to_vec())
    }

    /// Continues from a saved state; `net` and `ema` must carry the parameter ids the optimizer
    /// state was saved with.
    pub fn resume(&mut self, net: N, ema: N, progress: Progress, optimizer: Vec<u8>) -> Result<(), Error> {
        let optim = std::mem::replace(&mut self.optim, AdamConfig::new().init());
        self.optim = optim
            .from_bytes(Bytes::from_bytes_vec(optimizer))
            .map_err(|e| Error::new(format!("the saved optimizer state is damaged: {e:?}")))?;
        (self.net, self.ema) = (net, ema);
        (self.nimg, self.steps, self.rng) = (progress.nimg, progress.steps, progress.rng);
        self.tally.nimg = self.nimg;
        Ok(())
    }
}

/// Receives progress from [`fit`]; an error stops training.
pub trait Observer {
    /// After each chunk of steps.
    fn on_chunk<N: Network, M: Method>(&mut self, _trainer: &Trainer<N, M>) -> Result<(), Error> {
        Ok(())
    }
    fn on_log(&mut self, _record: &Metrics) -> Result<(), Error> {
        Ok(())
    }
}

#[cfg(not(target_family = "wasm"))]
/// Runs a future that is ready when first polled: a chunk read natively, which blocks inside.
fn ready_now<T>(future: impl Future<Output = T>) -> T {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match std::pin::pin!(future).poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => unreachable!("a blocking read is ready when polled"),
    }
}

/// Trains until `config.total_nimg` images in chunks that end at each metrics record (at most
/// [`MAX_CHUNK`] steps), reading the device once per chunk (and checking at each record that every
/// rank holds the same weights). `clock` gives seconds. Stops with an error, after recording the
/// metrics so far, when [`Trainer::check_health`] fails.
#[cfg(not(target_family = "wasm"))]
pub fn fit<N: Network, M: Method>(
    trainer: &mut Trainer<N, M>,
    data: &mut (impl Dataset + ?Sized),
    clock: impl Fn() -> f64,
    observer: &mut impl Observer,
) -> Result<(), Error> {
    let device = trainer.net.devices()[0].clone();
    if data.classes() != trainer.net.label_dim() {
        return Err(Error::new(format!(
            "the data carries labels of {} classes but the network takes {} (0: none)",
            data.classes(),
            trainer.net.label_dim()
        )));
    }
    trainer.start_clock(clock());
    while trainer.nimg < trainer.config.total_nimg {
        let batch = trainer.config.batch;
        let batches = (0..trainer.steps_to_record()).map(|_| data.batch(batch, &device)).collect();
        trainer.run_chunk(batches)?;
        observer.on_chunk(trainer)?;
        let health = trainer.check_health();
        if trainer.record_due() {
            trainer.check_ranks()?;
            observer.on_log(&trainer.record(clock()))?;
        }
        health?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record whose steps were all skipped has a NaN loss, written as null; it reads back (a
    /// resumed run keeps the records up to its state).
    #[test]
    fn a_record_without_a_loss_reads_back() {
        let record = Metrics { nimg: 64, loss: f64::NAN, lr: 1e-3, sec_per_kimg: 2.0, skipped: 4 };
        let line = serde_json::to_string(&record).unwrap();
        assert!(line.contains("\"loss\":null"), "{line}");
        let back: Metrics = serde_json::from_str(&line).unwrap();
        assert!(back.loss.is_nan() && back.skipped == 4 && back.nimg == 64);
        assert_eq!(serde_json::from_str::<Metrics>(&serde_json::to_string(&Metrics { loss: 0.5, ..record }).unwrap()).unwrap().loss, 0.5);
    }
}
