//! The method: how IMM (and the flow-matching baseline) train and sample, in the paper's symbols.
//! [`schedule`] (interpolants and time maths), [`precond`] (the parameterisation of f_{s,t}),
//! [`loss`] (IMM's MMD loss, flow matching's regression), [`sampler`] (pushforward, restart,
//! grids), and the two [`Method`]s the trainer runs: [`imm::Imm`] and
//! [`flow_matching::FlowMatching`].

use burn::tensor::{Tensor, TensorData};

use crate::networks::Network;
use crate::method::precond::Condition;
use crate::{Error, Labels, Rng};

pub mod flow_matching;
pub mod imm;
pub mod loss;
pub mod precond;
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

