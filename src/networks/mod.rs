//! The networks G(c_in x_t, c_noise(t), c_noise(s), y): the [`Network`] trait every method trains,
//! the 2D [`mlp`], the paper's CIFAR-10 network, DDPM++ ([`songunet`]), and its ImageNet network,
//! DiT ([`dit`]); [`image`] names either for the trainer. [`vae`]: the Stable Diffusion VAE whose
//! latents the ImageNet model works in.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{FloatDType, Tensor, TensorData};

pub mod dit;
pub mod image;
pub mod mlp;
pub mod songunet;
pub mod vae;

/// A network G(c_in x_t, c_noise(t), c_noise(s), y) on flattened samples; image networks reshape inside.
pub trait Network: Module + crate::io::weights::Named {
    /// # Shapes
    /// - x: [B, D], already scaled by c_in(t)
    /// - c_t, c_s: [B], the time inputs (1000 t and 1000 s, or 1000 (t - s))
    /// - y: [B, L] one-hot class labels, a null label an all-zero row; None is the null label for
    ///   all (a network without labels only takes None)
    /// - output: [B, D]
    fn forward(&self, x: Tensor<2>, c_t: Tensor<1>, c_s: Tensor<1>, y: Option<Tensor<2>>) -> Tensor<2>;

    /// The number of classes the network is conditioned on, L; 0 for none.
    fn label_dim(&self) -> usize {
        0
    }

    /// The network of IMM's stop-gradient target pass: no autodiff, and f32 however this one
    /// computes (the official code's `force_fp32`).
    fn target(&self) -> Self {
        self.valid()
    }
}

/// Sinusoidal embedding of a scalar input, as DDPM++'s (frequencies (1/10000)^(i/(n/2-1))).
///
/// # Shapes
/// - x: [B]
/// - output: [B, channels]
pub fn positional_embedding(x: Tensor<1>, channels: usize) -> Tensor<2> {
    let half = channels / 2;
    let freqs: Vec<f32> = (0..half)
        .map(|i| (1.0f64 / 10000.0).powf(i as f64 / (half.max(2) - 1) as f64) as f32)
        .collect();
    let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &x.device());
    let [b] = x.dims();
    let angles = x.reshape([b, 1]) * freqs.reshape([1, half]);
    Tensor::cat(vec![angles.clone().cos(), angles.sin()], 1)
}

/// Casts every float parameter of a module to one dtype.
pub(crate) struct CastParams(pub FloatDType);

impl ModuleMapper for CastParams {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.0;
        param.map(|value| value.cast(dtype))
    }
}
