//! The small MLP used for 2D data.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

use crate::kernels::group_norm::group_norm;
use crate::networks::{Network, positional_embedding};
use crate::Rng;

/// A linear layer drawn from our own generator (uniform, fan-in scaled), so that a seed fixes
/// the initial weights on every backend.
fn linear(d_in: usize, d_out: usize, gain: f64, rng: &mut Rng, device: &Device) -> Linear {
    let bound = gain * (3.0 / d_in as f64).sqrt();
    let w: Vec<f32> = (0..d_in * d_out).map(|_| rng.uniform_in(-bound, bound) as f32).collect();
    Linear {
        weight: Param::from_data(TensorData::new(w, [d_in, d_out]), device),
        bias: Some(Param::from_data(TensorData::new(vec![0f32; d_out], [d_out]), device)),
    }
}

/// burn's LayerNorm default, spelled out because the fused path below needs it.
const LAYER_NORM_EPSILON: f64 = 1e-5;

/// SiLU of LayerNorm: LayerNorm over the C features of [B, C] is GroupNorm of [B, C, 1, 1] with
/// one group, so it takes the fused GroupNorm kernel (one launch forward and two backward on GPUs,
/// where burn's LayerNorm decomposes into about thirty).
///
/// # Shapes
/// - h: [B, C]
/// - output: [B, C]
fn norm_silu(norm: &LayerNorm, h: Tensor<2>) -> Tensor<2> {
    let [b, c] = h.dims();
    let beta = norm.beta.as_ref().map_or_else(|| Tensor::zeros([c], &h.device()), Param::val);
    group_norm(h.reshape([b, c, 1, 1]), norm.gamma.val(), beta, 1, LAYER_NORM_EPSILON, true).reshape([b, c])
}

#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Data dimension D.
    #[config(default = 2)]
    pub dim: usize,
    #[config(default = 128)]
    pub hidden: usize,
    /// Residual blocks.
    #[config(default = 3)]
    pub blocks: usize,
    /// Channels of each sinusoidal time embedding.
    #[config(default = 64)]
    pub emb_channels: usize,
}

#[derive(Module, Debug)]
struct Block {
    norm: LayerNorm,
    fc1: Linear,
    emb: Linear,
    fc2: Linear,
}

impl Block {
    /// # Shapes
    /// - h: [B, H], emb: [B, H]
    /// - output: [B, H]
    fn forward(&self, h: Tensor<2>, emb: Tensor<2>) -> Tensor<2> {
        let z = silu(self.fc1.forward(norm_silu(&self.norm, h.clone())) + self.emb.forward(emb));
        h + self.fc2.forward(z)
    }
}

/// MLP with separate embeddings of t and s added after their own two-layer maps, as in DDPM++.
#[derive(Module, Debug)]
pub struct Mlp {
    map_t0: Linear,
    map_t1: Linear,
    map_s0: Linear,
    map_s1: Linear,
    input: Linear,
    blocks: Vec<Block>,
    output: Linear,
    emb_channels: usize,
}

impl MlpConfig {
    pub fn init(&self, rng: &mut Rng, device: &Device) -> Mlp {
        let (h, e) = (self.hidden, self.emb_channels);
        let blocks = (0..self.blocks)
            .map(|_| Block {
                norm: LayerNormConfig::new(h).with_epsilon(LAYER_NORM_EPSILON).init(device),
                fc1: linear(h, h, 1.0, rng, device),
                emb: linear(h, h, 1.0, rng, device),
                // Small last layers keep each block near the identity at initialisation.
                fc2: linear(h, h, 0.1, rng, device),
            })
            .collect();
        Mlp {
            map_t0: linear(e, h, 1.0, rng, device),
            map_t1: linear(h, h, 1.0, rng, device),
            map_s0: linear(e, h, 1.0, rng, device),
            map_s1: linear(h, h, 1.0, rng, device),
            input: linear(self.dim, h, 1.0, rng, device),
            blocks,
            output: linear(h, self.dim, 0.1, rng, device),
            emb_channels: e,
        }
    }
}

impl Network for Mlp {
    fn forward(&self, x: Tensor<2>, c_t: Tensor<1>, c_s: Tensor<1>, _y: Option<Tensor<2>>) -> Tensor<2> {
        let emb_t = self.map_t1.forward(silu(self.map_t0.forward(positional_embedding(c_t, self.emb_channels))));
        let emb_s = self.map_s1.forward(silu(self.map_s0.forward(positional_embedding(c_s, self.emb_channels))));
        let emb = silu(emb_t + emb_s);
        let mut h = self.input.forward(x);
        for block in &self.blocks {
            h = block.forward(h, emb.clone());
        }
        self.output.forward(silu(h))
    }
}

impl crate::io::weights::Named for Mlp {}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn fused_norm_is_silu_of_layer_norm() {
        let device = Device::flex();
        let mut norm = LayerNormConfig::new(16).with_epsilon(LAYER_NORM_EPSILON).init(&device);
        norm.gamma = Param::from_tensor(Tensor::random([16], Distribution::Normal(1.0, 0.5), &device));
        norm.beta = Some(Param::from_tensor(Tensor::random([16], Distribution::Normal(0.0, 0.5), &device)));
        // A variance near epsilon, so that a different epsilon would show.
        let h = Tensor::<2>::random([5, 16], Distribution::Normal(0.3, 0.01), &device);
        let fused = norm_silu(&norm, h.clone()).into_data().try_to_vec::<f32>().unwrap();
        let plain = silu(norm.forward(h)).into_data().try_to_vec::<f32>().unwrap();
        for (a, b) in fused.iter().zip(&plain) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }
}
