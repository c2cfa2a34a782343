//! The Stable Diffusion VAE: diffusers' `AutoencoderKL`, the class of `stabilityai/sd-vae-ft-ema`,
//! which the paper's ImageNet-256 model works in. The encoder maps an image in [-1, 1] to a
//! diagonal Gaussian posterior over latents (mean, std); the decoder maps latents back. Parameters
//! carry diffusers' names, and files with the older attention names load too.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::softmax;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, FloatDType, Tensor};

use crate::Error;
use crate::io::safetensors::{Stored, Tensors};
use crate::io::weights::{Named, load_named};
use crate::kernels::conv::conv2d;
use crate::kernels::group_norm::group_norm;
use crate::networks::CastParams;

/// diffusers' GroupNorm epsilon in every VAE block.
const EPSILON: f64 = 1e-6;

#[derive(Config, Debug, PartialEq)]
pub struct VaeConfig {
    /// Output channels of the encoder's blocks (the decoder's, reversed); one block per entry, each
    /// but the last halving the resolution.
    #[config(default = "vec![128, 256, 512, 512]")]
    pub block_out_channels: Vec<usize>,
    /// ResNet blocks per encoder block (the decoder has one more).
    #[config(default = 2)]
    pub layers_per_block: usize,
    #[config(default = 4)]
    pub latent_channels: usize,
    #[config(default = 32)]
    pub norm_num_groups: usize,
    /// Image channels.
    #[config(default = 3)]
    pub channels: usize,
}

impl VaeConfig {
    /// The configuration of a diffusers `AutoencoderKL` file, read from its shapes; GroupNorm's
    /// group count does not show there and is `groups` (32 in Stable Diffusion's VAE).
    pub fn infer(file: &Tensors, prefix: &str, groups: usize, what: &str) -> Result<Self, Error> {
        let shape = |name: &str| file.get(&format!("{prefix}{name}")).map(|t| t.shape.clone());
        let missing = || Error::new(format!("{what} is not a diffusers AutoencoderKL file (no {prefix}encoder.conv_in.weight)"));
        let conv_in = shape("encoder.conv_in.weight").ok_or_else(missing)?;
        let blocks = (0..).take_while(|i| shape(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight")).is_some()).count();
        let block_out_channels: Vec<usize> =
            (0..blocks).filter_map(|i| shape(&format!("encoder.down_blocks.{i}.resnets.0.conv1.weight")).map(|s| s[0])).collect();
        let layers_per_block = (0..).take_while(|j| shape(&format!("encoder.down_blocks.0.resnets.{j}.conv1.weight")).is_some()).count();
        let latent = shape("decoder.conv_in.weight").ok_or_else(missing)?;
        let config = VaeConfig::new()
            .with_block_out_channels(block_out_channels)
            .with_layers_per_block(layers_per_block)
            .with_latent_channels(latent.get(1).copied().unwrap_or(0))
            .with_norm_num_groups(groups)
            .with_channels(conv_in.get(1).copied().unwrap_or(0));
        config.validate().map_err(|e| Error::new(format!("{what}: {e}")))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), Error> {
        let channels = self.block_out_channels.iter().chain([&self.channels, &self.latent_channels]);
        if self.block_out_channels.is_empty() || self.layers_per_block == 0 || channels.clone().any(|&c| c == 0) {
            return Err(Error::new("a VAE needs at least one block, one layer per block and positive channel counts"));
        }
        if let Some(c) = self.block_out_channels.iter().find(|&&c| self.norm_num_groups == 0 || c % self.norm_num_groups != 0) {
            return Err(Error::new(format!("GroupNorm cannot split {c} channels into {} groups", self.norm_num_groups)));
        }
        Ok(())
    }

    /// How much smaller than the image the latents are on each side.
    pub fn downscale(&self) -> usize {
        1 << (self.block_out_channels.len() - 1)
    }

    /// A VAE with burn's default initial weights: for loading a file into.
    pub fn init(&self, device: &Device) -> Result<Vae, Error> {
        self.validate()?;
        let (boc, groups, layers) = (&self.block_out_channels, self.norm_num_groups, self.layers_per_block);
        let last = *boc.last().expect("validated");
        let down_blocks = (0..boc.len())
            .map(|i| {
                let c_in = if i == 0 { boc[0] } else { boc[i - 1] };
                Block {
                    resnets: (0..layers).map(|j| Resnet::new(if j == 0 { c_in } else { boc[i] }, boc[i], groups, device)).collect(),
                    downsamplers: (i + 1 < boc.len()).then(|| Resample { conv: conv(boc[i], boc[i], 3, 0, device) }).into_iter().collect(),
                    upsamplers: Vec::new(),
                }
            })
            .collect();
        let reversed: Vec<usize> = boc.iter().rev().copied().collect();
        let up_blocks = (0..reversed.len())
            .map(|i| {
                let c_in = if i == 0 { reversed[0] } else { reversed[i - 1] };
                let c = reversed[i];
                Block {
                    resnets: (0..=layers).map(|j| Resnet::new(if j == 0 { c_in } else { c }, c, groups, device)).collect(),
                    downsamplers: Vec::new(),
                    upsamplers: (i + 1 < reversed.len()).then(|| Resample { conv: conv(c, c, 3, 1, device) }).into_iter().collect(),
                }
            })
            .collect();
        let latent = self.latent_channels;
        Ok(Vae {
            encoder: Encoder {
                conv_in: conv(self.channels, boc[0], 3, 1, device),
                down_blocks,
                mid_block: Mid::new(last, groups, device),
                conv_norm_out: norm(last, groups, device),
                conv_out: conv(last, 2 * latent, 3, 1, device),
            },
            quant_conv: conv(2 * latent, 2 * latent, 1, 0, device),
            post_quant_conv: conv(latent, latent, 1, 0, device),
            decoder: Decoder {
                conv_in: conv(latent, last, 3, 1, device),
                mid_block: Mid::new(last, groups, device),
                up_blocks,
                conv_norm_out: norm(boc[0], groups, device),
                conv_out: conv(boc[0], self.channels, 3, 1, device),
            },
        })
    }
}

fn conv(c_in: usize, c_out: usize, kernel: usize, padding: usize, device: &Device) -> Conv2d {
    Conv2dConfig::new([c_in, c_out], [kernel, kernel]).with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding)).init(device)
}

fn norm(channels: usize, groups: usize, device: &Device) -> GroupNorm {
    GroupNormConfig::new(groups, channels).with_epsilon(EPSILON).init(device)
}

/// A stride-1 convolution with its own padding.
///
/// # Shapes
/// - x: [B, C_in, H, W]
/// - output: [B, C_out, H, W] (3x3, padding 1; or 1x1)
fn apply(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let padding = layer.weight.dims()[2] / 2;
    conv2d(x, layer.weight.val(), layer.bias.as_ref().map(Param::val), padding)
}

/// GroupNorm in f32 whatever the compute dtype (as diffusers upcasts it), then SiLU if
/// `then_silu`.
///
/// # Shapes
/// - x: [B, C, H, W]
/// - output: [B, C, H, W], in x's dtype
fn group_norm_silu(layer: &GroupNorm, x: Tensor<4>, then_silu: bool) -> Tensor<4> {
    let (c, device, dtype) = (layer.num_channels, x.device(), FloatDType::from(x.dtype()));
    let f32 = |p: &Param<Tensor<1>>| p.val().cast(FloatDType::F32);
    let gamma = layer.gamma.as_ref().map_or_else(|| Tensor::ones([c], &device), f32);
    let beta = layer.beta.as_ref().map_or_else(|| Tensor::zeros([c], &device), f32);
    group_norm(x.cast(FloatDType::F32), gamma, beta, layer.num_groups, layer.epsilon, then_silu).cast(dtype)
}

/// diffusers' `ResnetBlock2D` without a time embedding.
#[derive(Module, Debug)]
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    norm2: GroupNorm,
    conv2: Conv2d,
    /// A 1x1 convolution where the channel count changes.
    conv_shortcut: Option<Conv2d>,
}

impl Resnet {
    fn new(c_in: usize, c_out: usize, groups: usize, device: &Device) -> Self {
        Resnet {
            norm1: norm(c_in, groups, device),
            conv1: conv(c_in, c_out, 3, 1, device),
            norm2: norm(c_out, groups, device),
            conv2: conv(c_out, c_out, 3, 1, device),
            conv_shortcut: (c_in != c_out).then(|| conv(c_in, c_out, 1, 0, device)),
        }
    }

    /// # Shapes
    /// - x: [B, C_in, H, W]
    /// - output: [B, C_out, H, W]
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let h = apply(&self.conv1, group_norm_silu(&self.norm1, x.clone(), true));
        let h = apply(&self.conv2, group_norm_silu(&self.norm2, h, true));
        let skip = match &self.conv_shortcut {
            Some(shortcut) => apply(shortcut, x),
            None => x,
        };
        skip + h
    }
}

/// The mid-block's single-head self-attention over the pixels, with its residual.
#[derive(Module, Debug)]
struct Attention {
    group_norm: GroupNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Vec<Linear>,
}

impl Attention {
    fn new(c: usize, groups: usize, device: &Device) -> Self {
        let linear = || LinearConfig::new(c, c).init(device);
        Attention { group_norm: norm(c, groups, device), to_q: linear(), to_k: linear(), to_v: linear(), to_out: vec![linear()] }
    }

    /// # Shapes
    /// - x: [B, C, H, W]
    /// - output: [B, C, H, W]
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let tokens = group_norm_silu(&self.group_norm, x.clone(), false).reshape([b, c, h * w]).swap_dims(1, 2);
        let (q, k, v) = (self.to_q.forward(tokens.clone()), self.to_k.forward(tokens.clone()), self.to_v.forward(tokens));
        let logits = q.matmul(k.swap_dims(1, 2)).div_scalar((c as f32).sqrt());
        let weights = softmax(logits.clone().cast(FloatDType::F32), 2).cast(FloatDType::from(logits.dtype()));
        let out = self.to_out[0].forward(weights.matmul(v));
        out.swap_dims(1, 2).reshape([b, c, h, w]) + x
    }
}

/// ResNet, attention, ResNet at the lowest resolution.
#[derive(Module, Debug)]
struct Mid {
    resnets: Vec<Resnet>,
    attentions: Vec<Attention>,
}

impl Mid {
    fn new(c: usize, groups: usize, device: &Device) -> Self {
        Mid { resnets: vec![Resnet::new(c, c, groups, device), Resnet::new(c, c, groups, device)], attentions: vec![Attention::new(c, groups, device)] }
    }

    /// # Shapes
    /// - x: [B, C, H, W]
    /// - output: [B, C, H, W]
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.resnets[0].forward(x);
        self.resnets[1].forward(self.attentions[0].forward(x))
    }
}

/// The convolution of a down- or upsampler.
#[derive(Module, Debug)]
struct Resample {
    conv: Conv2d,
}

/// An encoder block (ResNets, then a downsampler but in the last) or a decoder block (ResNets,
/// then an upsampler but in the last).
#[derive(Module, Debug)]
struct Block {
    resnets: Vec<Resnet>,
    downsamplers: Vec<Resample>,
    upsamplers: Vec<Resample>,
}

impl Block {
    /// # Shapes
    /// - x: [B, C_in, H, W]
    /// - output: [B, C_out, H', W'], H' = H/2 after a downsampler, 2H after an upsampler
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = self.resnets.iter().fold(x, |x, r| r.forward(x));
        for down in &self.downsamplers {
            // One zero column on the right and one zero row at the bottom, then stride 2 unpadded.
            let [b, c, h, w] = x.dims();
            let zeros = Tensor::<4>::zeros([b, c, h + 1, w + 1], &x.device()).cast(FloatDType::from(x.dtype()));
            let padded = zeros.slice_assign([0..b, 0..c, 0..h, 0..w], x);
            let options = ConvOptions::new([2, 2], [0, 0], [1, 1], 1);
            x = burn::tensor::module::conv2d(padded, down.conv.weight.val(), down.conv.bias.as_ref().map(Param::val), options);
        }
        for up in &self.upsamplers {
            // Nearest-neighbour x2: each pixel repeated in a 2x2 square.
            let [b, c, h, w] = x.dims();
            let nearest = x.reshape([b, c, h, 1, w, 1]).expand([b, c, h, 2, w, 2]).reshape([b, c, 2 * h, 2 * w]);
            x = apply(&up.conv, nearest);
        }
        x
    }
}

#[derive(Module, Debug)]
struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<Block>,
    mid_block: Mid,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

#[derive(Module, Debug)]
struct Decoder {
    conv_in: Conv2d,
    mid_block: Mid,
    up_blocks: Vec<Block>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
}

#[derive(Module, Debug)]
pub struct Vae {
    encoder: Encoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    decoder: Decoder,
}

/// A diagonal Gaussian over latents.
pub struct Posterior {
    /// [B, L, h, w]
    pub mean: Tensor<4>,
    /// [B, L, h, w]
    pub std: Tensor<4>,
}

impl Vae {
    /// The VAE computing in `dtype` (its weights cast; GroupNorm and softmax stay f32): f16 as
    /// the official code runs it, where the device has it.
    pub fn with_dtype(self, dtype: FloatDType) -> Vae {
        self.map(&mut CastParams(dtype))
    }

    /// The dtype the VAE computes in.
    pub fn dtype(&self) -> FloatDType {
        FloatDType::from(self.quant_conv.weight.val().dtype())
    }

    /// The encoder's last convolution, before the posterior is split off: mean and log-variance
    /// (unclamped) along the channels.
    ///
    /// # Shapes
    /// - x: [B, C, H, W], in [-1, 1]
    /// - output: [B, 2L, H / f, W / f] in f32, f = [`VaeConfig::downscale`]
    pub fn moments(&self, x: Tensor<4>) -> Tensor<4> {
        let e = &self.encoder;
        let h = e.down_blocks.iter().fold(apply(&e.conv_in, x.cast(self.dtype())), |h, block| block.forward(h));
        let h = group_norm_silu(&e.conv_norm_out, e.mid_block.forward(h), true);
        apply(&self.quant_conv, apply(&e.conv_out, h)).cast(FloatDType::F32)
    }

    /// The posterior of the latents: the mean, and std = exp(logvar / 2) with logvar clamped to
    /// [-30, 20] as diffusers does.
    ///
    /// # Shapes
    /// - x: [B, C, H, W], in [-1, 1]
    /// - output: mean and std [B, L, H / f, W / f], in f32
    pub fn encode(&self, x: Tensor<4>) -> Posterior {
        let moments = self.moments(x);
        let [b, two_l, h, w] = moments.dims();
        let l = two_l / 2;
        let mean = moments.clone().slice([0..b, 0..l, 0..h, 0..w]);
        let logvar = moments.slice([0..b, l..two_l, 0..h, 0..w]).clamp(-30.0, 20.0);
        Posterior { mean, std: logvar.mul_scalar(0.5).exp() }
    }

    /// Images from latents.
    ///
    /// # Shapes
    /// - z: [B, L, h, w]
    /// - output: [B, C, h f, w f], about [-1, 1], in f32
    pub fn decode(&self, z: Tensor<4>) -> Tensor<4> {
        let d = &self.decoder;
        let h = d.mid_block.forward(apply(&d.conv_in, apply(&self.post_quant_conv, z.cast(self.dtype()))));
        let h = d.up_blocks.iter().fold(h, |h, block| block.forward(h));
        apply(&d.conv_out, group_norm_silu(&d.conv_norm_out, h, true)).cast(FloatDType::F32)
    }

    /// A diffusers `AutoencoderKL` file (the keys under `prefix`), its configuration read from its
    /// shapes; `groups` as [`VaeConfig::infer`]. The attention's older names (`query`, `key`,
    /// `value`, `proj_attn`, as in the released sd-vae-ft-ema) load as the current ones.
    pub fn load(file: &Tensors, prefix: &str, groups: usize, what: &str, device: &Device) -> Result<(Vae, VaeConfig), Error> {
        let config = VaeConfig::infer(file, prefix, groups, what)?;
        let mut renamed = Tensors { tensors: Default::default(), metadata: file.metadata.clone() };
        for (name, tensor) in &file.tensors {
            let name = [(".query.", ".to_q."), (".key.", ".to_k."), (".value.", ".to_v."), (".proj_attn.", ".to_out.0.")]
                .iter()
                .fold(name.clone(), |n, (old, new)| n.replace(old, new));
            renamed.tensors.insert(name, Stored { shape: tensor.shape.clone(), values: tensor.values.clone() });
        }
        let vae = load_named(config.init(device)?, &renamed, prefix, what, None)?;
        Ok((vae, config))
    }
}

impl Named for Vae {
    fn param_name(&self, path: &str) -> String {
        // burn's GroupNorm calls its scale and shift gamma and beta; PyTorch, weight and bias.
        match path.rsplit_once('.') {
            Some((head, "gamma")) => format!("{head}.weight"),
            Some((head, "beta")) => format!("{head}.bias"),
            _ => path.to_string(),
        }
    }
}
