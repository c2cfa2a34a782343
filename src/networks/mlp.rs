//! The small MLP used for 2D data.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::activation::silu;
use burn::tensor::{Device, Tensor, TensorData};

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
        let z = silu(self.fc1.forward(silu(self.norm.forward(h.clone()))) + self.emb.forward(emb));
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
                norm: LayerNormConfig::new(h).init(device),
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
