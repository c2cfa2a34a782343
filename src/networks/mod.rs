//! The networks G(c_in x_t, c_noise(t), c_noise(s), y): the [`Network`] trait every method trains,
//! the 2D [`mlp`], the paper's CIFAR-10 network, DDPM++ ([`songunet`]), and its ImageNet network,
//! DiT ([`dit`]); [`image`] names either for the trainer. [`vae`]: the Stable Diffusion VAE whose
//! latents the ImageNet model works in.

use std::borrow::Cow;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::Error;

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

/// Mixed precision as PyTorch's autocast: the parameters stay f32 (the optimizer updates those)
/// and are cast on the way into each convolution and linear layer; normalisations, softmax, the
/// time embeddings' sinusoids and the network's output stay f32 ([P] App. I.6: FP16 wants a = 2 and
/// t - s conditioning; BF16 blurs nearby t and r).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(not(target_family = "wasm"), derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Precision {
    pub fn dtype(self) -> FloatDType {
        match self {
            Precision::F32 => FloatDType::F32,
            Precision::F16 => FloatDType::F16,
            Precision::Bf16 => FloatDType::BF16,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
            Precision::Bf16 => "bf16",
        }
    }

    /// Fails, instead of a panic inside a kernel, where `device` cannot compute in this dtype.
    pub fn check(self, device: &Device) -> Result<(), Error> {
        if device.supports_dtype(self.dtype()) {
            return Ok(());
        }
        Err(Error::new(format!(
            "this device cannot compute in {} (WGSL, for one, has no bf16): choose another --precision or --device",
            self.name()
        )))
    }
}

/// A layer whose parameters are cast to `dtype` (a differentiable cast: gradients reach the f32
/// parameters); in f32 the layer itself.
pub(crate) fn cast<M: Module>(layer: &M, dtype: FloatDType) -> Cow<'_, M> {
    match dtype {
        FloatDType::F32 => Cow::Borrowed(layer),
        _ => Cow::Owned(layer.clone().map(&mut CastParams(dtype))),
    }
}
