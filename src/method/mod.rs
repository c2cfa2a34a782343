//! The method: how IMM and the few-step methods it is compared with train and sample, in the
//! papers' symbols. [`schedule`] (interpolants and time maths), [`precond`] (the parameterisation
//! of f_{s,t}), [`loss`] (IMM's MMD loss, flow matching's regression), [`sampler`] (pushforward,
//! restart, grids), and the [`Method`]s the trainer runs: [`imm::Imm`],
//! [`flow_matching::FlowMatching`], [`meanflow::MeanFlow`], [`consistency::Consistency`] and
//! [`shortcut::Shortcut`], any of which an [`AnyMethod`] holds.

use burn::tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::method::consistency::Consistency;
use crate::method::flow_matching::FlowMatching;
use crate::method::imm::Imm;
use crate::method::meanflow::MeanFlow;
use crate::method::precond::Condition;
use crate::method::sampler::{Grid, Sampler};
use crate::method::shortcut::Shortcut;
use crate::networks::Network;
use crate::{Error, Labels, Rng};

pub mod consistency;
pub mod flow_matching;
pub mod imm;
pub mod loss;
pub mod meanflow;
pub mod precond;
pub mod shortcut;
pub mod sampler;
pub mod schedule;

/// A generative training method: what the trainer minimises and how its models sample.
/// `Sync`: data-parallel training computes the loss on every device at once.
pub trait Method: Sync {
    /// Short name, as in metrics and file names.
    fn name(&self) -> &'static str;

    /// Fails when the method cannot train with this batch size.
    fn check_batch(&self, batch: usize) -> Result<(), Error>;

    /// Fails when the sampler cannot take this many steps (before any work is done).
    fn check_steps(&self, steps: usize) -> Result<(), Error>;

    /// Std of the prior the samplers start from, N(0, sigma_d^2 I).
    fn sigma_data(&self) -> f64;

    /// Consecutive samples of a batch that the loss compares as one distribution (IMM's M); 1
    /// for a loss per sample.
    fn group(&self) -> usize {
        1
    }

    /// Called before each step with the images trained so far, for a method whose loss follows
    /// a schedule over training (consistency training's shrinking gap).
    fn at_nimg(&mut self, _nimg: u64) {}

    /// One stochastic estimate of the loss on a batch of data with class labels y, drawing times
    /// and noise from `rng`.
    ///
    /// # Shapes
    /// - x: [B, D]; y: B labels
    /// - output: [1]
    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1>;

    /// Samples from prior noise z under `condition` with `steps` steps (each one network
    /// evaluation, batched twice as large when guided); stochastic samplers draw from `rng`.
    /// Returns z and the state after each step: N + 1 tensors, the sample last.
    ///
    /// # Shapes
    /// - z: [B, D]; condition: B labels or none
    /// - output: N + 1 of [B, D]
    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error>;

    /// The last state of [`Method::sample_path`].
    ///
    /// # Shapes
    /// - z: [B, D]; condition: B labels or none
    /// - output: [B, D]
    fn sample<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Tensor<2>, Error> {
        Ok(self.sample_path(net, z, condition, steps, rng)?.pop().expect("a path holds at least z"))
    }
}

/// `n` draws of N(0, std^2 I) shaped like `like`, on its device.
pub(crate) fn gaussian(like: &Tensor<2>, std: f64, rng: &mut Rng) -> Tensor<2> {
    let [b, d] = like.dims();
    Tensor::from_data(TensorData::new(rng.normal_vec(b * d, std), [b, d]), &like.device())
}

/// One of the methods, as a card or the command line names it: what a model trains and samples
/// with. Serialises as the method's own settings (a card's `method_config`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum AnyMethod {
    Imm(Imm),
    Fm(FlowMatching),
    MeanFlow(MeanFlow),
    Consistency(Consistency),
    Shortcut(Shortcut),
}

/// `$body` with `$m` bound to the method inside `$any`.
macro_rules! each {
    ($any:expr, $m:ident => $body:expr) => {
        match $any {
            AnyMethod::Imm($m) => $body,
            AnyMethod::Fm($m) => $body,
            AnyMethod::MeanFlow($m) => $body,
            AnyMethod::Consistency($m) => $body,
            AnyMethod::Shortcut($m) => $body,
        }
    };
}

impl AnyMethod {
    /// The names [`AnyMethod::from_card`] knows.
    pub const NAMES: [&str; 5] = ["imm", "fm", "meanflow", "ct", "shortcut"];
    /// Their names in words, as pictures and tables show them.
    pub const TITLES: [&str; 5] = ["IMM", "flow matching", "MeanFlow", "consistency training", "shortcut model"];

    /// The method called `name` (one of [`AnyMethod::NAMES`]) with a preset's IMM and flow-matching
    /// settings; the other methods take their papers' settings on flow matching's network and
    /// times, for a run of `total_nimg` images (consistency training's gap schedule).
    pub fn named(name: &str, imm: &Imm, fm: &FlowMatching, total_nimg: u64) -> Result<Self, Error> {
        Ok(match name {
            "imm" => AnyMethod::Imm(imm.clone()),
            "fm" => AnyMethod::Fm(fm.clone()),
            "meanflow" => AnyMethod::MeanFlow(MeanFlow::on(&fm.precond)),
            "ct" => AnyMethod::Consistency(Consistency::on(&fm.precond, fm.t_max, fm.grid.clone(), total_nimg)),
            "shortcut" => AnyMethod::Shortcut(Shortcut::on(&fm.precond)),
            other => return Err(Error::new(format!("unknown method '{other}' (one of {})", Self::NAMES.join(", ")))),
        })
    }

    /// The method's name in words.
    pub fn title(&self) -> &'static str {
        Self::TITLES[Self::NAMES.iter().position(|n| *n == self.name()).expect("every method is in NAMES")]
    }

    /// The method a card names (`method`) with its settings (`method_config`); `what` names the
    /// file in errors.
    pub fn from_card(name: Option<&str>, settings: serde_json::Value, what: &str) -> Result<Self, Error> {
        let bad = |e: serde_json::Error| Error::new(format!("{what}: bad method config: {e}"));
        let method = match name {
            Some("imm") => AnyMethod::Imm(serde_json::from_value(settings).map_err(bad)?),
            Some("fm") => AnyMethod::Fm(serde_json::from_value(settings).map_err(bad)?),
            Some("meanflow") => AnyMethod::MeanFlow(serde_json::from_value(settings).map_err(bad)?),
            Some("ct") => AnyMethod::Consistency(serde_json::from_value(settings).map_err(bad)?),
            Some("shortcut") => AnyMethod::Shortcut(serde_json::from_value(settings).map_err(bad)?),
            other => {
                return Err(Error::new(format!(
                    "{what} was trained with the method {}, which this imm cannot sample (it knows {})",
                    other.map_or_else(|| "that its card does not name".to_string(), |m| format!("'{m}'")),
                    Self::NAMES.join(", ")
                )));
            }
        };
        method.validate().map_err(|e| Error::new(format!("{what}: bad method config: {e}")))?;
        Ok(method)
    }

    pub fn validate(&self) -> Result<(), Error> {
        each!(self, m => m.validate())
    }

    /// Replaces the sampling times and the sampler by the given ones; fails for a sampler the
    /// method does not have. MeanFlow's and shortcut models' uniform steps from 1 to 0 are part
    /// of their definitions; consistency models jump to the data and re-noise.
    pub fn choose_sampling(&mut self, grid: Option<Grid>, sampler: Option<Sampler>) -> Result<(), Error> {
        match self {
            AnyMethod::Imm(imm) => {
                imm.grid = grid.unwrap_or(imm.grid.clone());
                imm.sampler = sampler.unwrap_or(imm.sampler);
            }
            AnyMethod::Fm(fm) => {
                fm.grid = grid.unwrap_or(fm.grid.clone());
                fm.sampler = sampler.unwrap_or(fm.sampler);
            }
            AnyMethod::MeanFlow(_) | AnyMethod::Shortcut(_) if sampler.is_some_and(|s| s != Sampler::Pushforward) => {
                let who = if matches!(self, AnyMethod::MeanFlow(_)) { "MeanFlow" } else { "A shortcut model" };
                return Err(Error::new(format!("{who} samples with its own uniform steps (pushforward) only")));
            }
            AnyMethod::Consistency(_) if sampler.is_some_and(|s| s != Sampler::Restart) => {
                return Err(Error::new("consistency models sample by jumping to the data and re-noising (restart) only"));
            }
            AnyMethod::Consistency(ct) => ct.grid = grid.unwrap_or(ct.grid.clone()),
            AnyMethod::MeanFlow(_) | AnyMethod::Shortcut(_) => {}
        }
        self.validate()
    }
}

impl Method for AnyMethod {
    fn name(&self) -> &'static str {
        each!(self, m => m.name())
    }

    fn check_batch(&self, batch: usize) -> Result<(), Error> {
        each!(self, m => m.check_batch(batch))
    }

    fn check_steps(&self, steps: usize) -> Result<(), Error> {
        each!(self, m => m.check_steps(steps))
    }

    fn sigma_data(&self) -> f64 {
        each!(self, m => m.sigma_data())
    }

    fn group(&self) -> usize {
        each!(self, m => m.group())
    }

    fn at_nimg(&mut self, nimg: u64) {
        each!(self, m => m.at_nimg(nimg))
    }

    fn loss<N: Network>(&self, net: &N, x: Tensor<2>, y: Option<&Labels>, rng: &mut Rng) -> Tensor<1> {
        each!(self, m => m.loss(net, x, y, rng))
    }

    fn sample_path<N: Network>(&self, net: &N, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Vec<Tensor<2>>, Error> {
        each!(self, m => m.sample_path(net, z, condition, steps, rng))
    }
}
