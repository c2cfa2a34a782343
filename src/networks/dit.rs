//! DiT (Peebles & Xie) as in the official IMM code (lumalabs/imm `training/dit.py`): patch tokens
//! with a fixed 2-D sin-cos position table, a time embedding of t plus one of the second time input,
//! a label table with a null row, adaLN-Zero blocks, and a final adaLN layer. Parameters carry the
//! official `state_dict` names through [`DiT::official_name`], so an exported checkpoint loads.
//! In f16 or bf16 it computes as PyTorch's autocast does (the paper's FP16 runs).

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use crate::io::weights::Named;
use crate::networks::{Network, Precision, cast};
use crate::{Error, Rng};

#[derive(Config, Debug, PartialEq)]
pub struct DiTConfig {
    /// Input side in pixels (or latent cells); a multiple of `patch_size`.
    #[config(default = 32)]
    pub img_resolution: usize,
    #[config(default = 4)]
    pub in_channels: usize,
    #[config(default = 2)]
    pub patch_size: usize,
    #[config(default = 1152)]
    pub hidden_size: usize,
    #[config(default = 28)]
    pub depth: usize,
    #[config(default = 16)]
    pub num_heads: usize,
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Classes; the label table has one more row, the null label. 0 for an unconditional network
    /// (its table is the null row alone).
    #[config(default = 1000)]
    pub num_classes: usize,
    /// A second time embedding (of s, or of t - s), added to t's.
    #[config(default = true)]
    pub s_embed: bool,
    /// Width of the sinusoids each time embedding starts from.
    #[config(default = 256)]
    pub frequency_embedding_size: usize,
    /// Conditioning width = hidden_size * temb_mult.
    #[config(default = 1)]
    pub temb_mult: usize,
    /// The dtype linear layers and attention products run in; none is f32 (and lets configs
    /// saved before this option load).
    #[config(default = "None")]
    pub precision: Option<Precision>,
}

impl DiTConfig {
    /// An official size, `S`, `B`, `L` or `XL`, with patch 2, 4 or 8 (`XL/2` is the ImageNet model).
    pub fn named(name: &str) -> Result<Self, Error> {
        let (size, patch) = name.split_once('/').unwrap_or((name, "2"));
        let (hidden, depth, heads) = match size.to_ascii_uppercase().as_str() {
            "S" => (384, 12, 6),
            "B" => (768, 12, 12),
            "L" => (1024, 24, 16),
            "XL" => (1152, 28, 16),
            _ => return Err(Error::new(format!("unknown DiT size '{size}'; use S, B, L or XL"))),
        };
        let patch = match patch {
            "2" | "4" | "8" => patch.parse().expect("a digit"),
            _ => return Err(Error::new(format!("DiT patch sizes are 2, 4 and 8, not '{patch}'"))),
        };
        Ok(Self::new().with_hidden_size(hidden).with_depth(depth).with_num_heads(heads).with_patch_size(patch))
    }

    pub fn validate(&self) -> Result<(), Error> {
        let (p, h) = (self.patch_size, self.hidden_size);
        if p == 0 || self.img_resolution == 0 || self.img_resolution % p != 0 || self.in_channels == 0 {
            return Err(Error::new(format!("DiT needs a side ({}) that the patch size ({p}) divides, and channels", self.img_resolution)));
        }
        if self.num_heads == 0 || h % self.num_heads != 0 || h % 4 != 0 {
            return Err(Error::new(format!("DiT's hidden size ({h}) must split into {} heads and be a multiple of 4", self.num_heads)));
        }
        if self.depth == 0 || self.temb_mult == 0 || self.frequency_embedding_size < 2 || !(self.mlp_ratio > 0.0) {
            return Err(Error::new("DiT needs depth, temb_mult, frequency channels and mlp_ratio above 0"));
        }
        Ok(())
    }

    pub fn init(&self, rng: &mut Rng, device: &Device) -> Result<DiT, Error> {
        self.validate()?;
        self.precision.unwrap_or_default().check(device)?;
        let (h, p, c) = (self.hidden_size, self.patch_size, self.in_channels);
        let temb = h * self.temb_mult;
        let mlp = (h as f64 * self.mlp_ratio) as usize;
        let side = self.img_resolution / p;
        let mut init = Init { rng, device };
        let embedder = |init: &mut Init| TimestepEmbedder {
            mlp0: init.linear(self.frequency_embedding_size, temb, Some(0.02)),
            mlp2: init.linear(temb, temb, Some(0.02)),
        };
        let t_embedder = embedder(&mut init);
        let s_embedder = self.s_embed.then(|| embedder(&mut init));
        let patch = init.normal(h * c * p * p, (1.0 / (c * p * p) as f64).sqrt());
        let x_embedder = PatchEmbed {
            weight: Param::from_data(TensorData::new(patch, [h, c, p, p]), device),
            bias: init.zeros(h),
        };
        let table = init.normal((self.num_classes + 1) * temb, 0.02);
        let y_embedder = LabelTable { table: Param::from_data(TensorData::new(table, [temb, self.num_classes + 1]), device) };
        let pos = position_table(h, side);
        let pos_embed = Param::from_data(TensorData::new(pos, [1, side * side, h]), device).set_require_grad(false);
        let blocks = (0..self.depth)
            .map(|_| DiTBlock {
                attn: Attention { qkv: init.linear(h, 3 * h, None), proj: init.linear(h, h, None) },
                mlp: FeedForward { fc1: init.linear(h, mlp, None), fc2: init.linear(mlp, h, None) },
                ada_ln: init.zero_linear(temb, 6 * h),
                heads: self.num_heads,
            })
            .collect();
        let final_layer = FinalLayer { ada_ln: init.zero_linear(temb, 2 * h), linear: init.zero_linear(h, p * p * c) };
        Ok(DiT {
            x_embedder,
            t_embedder,
            s_embedder,
            y_embedder,
            pos_embed,
            blocks,
            final_layer,
            patch: p,
            channels: c,
            side,
            frequencies: self.frequency_embedding_size,
            classes: self.num_classes,
            precision: self.precision.unwrap_or_default(),
        })
    }
}

/// Initial weights from our own generator, as the official `initialize_weights`: xavier-uniform
/// linear layers with zero biases, N(0, 0.02) embedding tables, zero adaLN layers and output.
struct Init<'a> {
    rng: &'a mut Rng,
    device: &'a Device,
}

impl Init<'_> {
    fn normal(&mut self, n: usize, std: f64) -> Vec<f32> {
        self.rng.normal_vec(n, std)
    }

    fn zeros(&self, n: usize) -> Param<Tensor<1>> {
        Param::from_data(TensorData::new(vec![0f32; n], [n]), self.device)
    }

    /// Xavier-uniform, or N(0, std^2) where given.
    fn linear(&mut self, d_in: usize, d_out: usize, std: Option<f64>) -> Linear {
        let w = match std {
            Some(std) => self.normal(d_in * d_out, std),
            None => {
                let bound = (6.0 / (d_in + d_out) as f64).sqrt();
                (0..d_in * d_out).map(|_| self.rng.uniform_in(-bound, bound) as f32).collect()
            }
        };
        Linear { weight: Param::from_data(TensorData::new(w, [d_in, d_out]), self.device), bias: Some(self.zeros(d_out)) }
    }

    fn zero_linear(&mut self, d_in: usize, d_out: usize) -> Linear {
        Linear {
            weight: Param::from_data(TensorData::new(vec![0f32; d_in * d_out], [d_in, d_out]), self.device),
            bias: Some(self.zeros(d_out)),
        }
    }
}

/// The fixed 2-D sin-cos table of `side` x `side` tokens (row-major): the first half of the
/// channels encodes the column, the second half the row, each half [sin, cos] over frequencies
/// 1 / 10000^(i / (width / 4)).
fn position_table(width: usize, side: usize) -> Vec<f32> {
    let quarter = width / 4;
    let omega: Vec<f64> = (0..quarter).map(|i| 1.0 / 10000f64.powf(i as f64 / quarter as f64)).collect();
    let mut out = Vec::with_capacity(side * side * width);
    for row in 0..side {
        for col in 0..side {
            for pos in [col as f64, row as f64] {
                out.extend(omega.iter().map(|w| (pos * w).sin() as f32));
                out.extend(omega.iter().map(|w| (pos * w).cos() as f32));
            }
        }
    }
    out
}

/// LayerNorm over the last axis without an affine map (eps 1e-6).
///
/// # Shapes
/// - x: [B, T, H]
/// - output: [B, T, H]
fn layer_norm(x: Tensor<3>) -> Tensor<3> {
    let mean = x.clone().mean_dim(2);
    let centred = x - mean;
    let var = centred.clone().square().mean_dim(2);
    centred / (var + 1e-6).sqrt()
}

/// x (1 + scale) + shift, one scale and shift per sample.
///
/// # Shapes
/// - x: [B, T, H]; shift, scale: [B, H]
/// - output: [B, T, H]
fn modulate(x: Tensor<3>, shift: Tensor<2>, scale: Tensor<2>) -> Tensor<3> {
    x * (scale.unsqueeze_dim::<3>(1) + 1.0) + shift.unsqueeze_dim(1)
}

/// `layer` in `dtype`, as autocast runs linear layers: the input and the parameters cast to it
/// (the gradients reach the f32 parameters), the output left in it.
///
/// # Shapes
/// - x: [..., d_in]
/// - output: [..., d_out], in `dtype`
fn linear<const D: usize>(layer: &Linear, x: Tensor<D>, dtype: FloatDType) -> Tensor<D> {
    cast(layer, dtype).forward(x.cast(dtype))
}

/// GELU with the tanh approximation (the official MLP's).
fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner = (x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar((2.0 / std::f64::consts::PI).sqrt() as f32);
    x.mul_scalar(0.5) * (inner.tanh() + 1.0)
}

/// The p x p, stride-p convolution of the official patch embedding, as patches times a matrix.
#[derive(Module, Debug)]
struct PatchEmbed {
    /// [H, C, p, p], the official convolution weight.
    weight: Param<Tensor<4>>,
    bias: Param<Tensor<1>>,
}

#[derive(Module, Debug)]
struct TimestepEmbedder {
    mlp0: Linear,
    mlp2: Linear,
}

impl TimestepEmbedder {
    /// Sinusoids [cos, sin] over frequencies 10000^(-i / half), then Linear, SiLU, Linear.
    ///
    /// # Shapes
    /// - c: [B]
    /// - output: [B, temb]
    fn forward(&self, c: Tensor<1>, channels: usize, dtype: FloatDType) -> Tensor<2> {
        let half = channels / 2;
        let freqs: Vec<f32> = (0..half).map(|i| (-(10000f64.ln()) * i as f64 / half as f64).exp() as f32).collect();
        let freqs = Tensor::<1>::from_data(TensorData::new(freqs, [half]), &c.device());
        let [b] = c.dims();
        let angles = c.reshape([b, 1]) * freqs.reshape([1, half]);
        let mut parts = vec![angles.clone().cos(), angles.sin()];
        if channels % 2 == 1 {
            parts.push(Tensor::zeros([b, 1], &parts[0].device()));
        }
        let f32 = FloatDType::F32;
        linear(&self.mlp2, silu(linear(&self.mlp0, Tensor::cat(parts, 1), dtype).cast(f32)), dtype).cast(f32)
    }
}

/// The label table, num_classes + 1 rows (the last is the null label), stored transposed as
/// every matrix here ([temb, rows]).
#[derive(Module, Debug)]
struct LabelTable {
    table: Param<Tensor<2>>,
}

#[derive(Module, Debug)]
struct Attention {
    qkv: Linear,
    proj: Linear,
}

#[derive(Module, Debug)]
struct FeedForward {
    fc1: Linear,
    fc2: Linear,
}

#[derive(Module, Debug)]
struct DiTBlock {
    attn: Attention,
    mlp: FeedForward,
    ada_ln: Linear,
    heads: usize,
}

impl DiTBlock {
    /// The residual stream, the norms, the activations and the softmax stay f32 (PyTorch computes
    /// GELU and SiLU of f16 in f32 too); the linear layers and the attention products run in `dtype`.
    ///
    /// # Shapes
    /// - x: [B, T, H], f32; c: [B, temb]
    /// - output: [B, T, H], f32
    fn forward(&self, x: Tensor<3>, c: Tensor<2>, dtype: FloatDType) -> Tensor<3> {
        let f32 = FloatDType::F32;
        let [b, t, h] = x.dims();
        let m: Vec<Tensor<2>> = linear(&self.ada_ln, silu(c), dtype).cast(f32).chunk(6, 1);
        let (head, heads) = (h / self.heads, self.heads);
        // qkv channels are [3, heads, head_dim].
        let qkv = linear(&self.attn.qkv, modulate(layer_norm(x.clone()), m[0].clone(), m[1].clone()), dtype);
        let qkv = qkv.reshape([b, t, 3, heads, head]).permute([2, 0, 3, 1, 4]);
        let part = |j: usize| qkv.clone().slice([j..j + 1]).reshape([b, heads, t, head]);
        let (q, k, v) = (part(0), part(1), part(2));
        let logits = q.matmul(k.swap_dims(2, 3)).mul_scalar((head as f32).powf(-0.5));
        let w = softmax(logits.cast(f32), 3).cast(dtype);
        let a = w.matmul(v).swap_dims(1, 2).reshape([b, t, h]);
        let x = x + linear(&self.attn.proj, a, dtype).cast(f32) * m[2].clone().unsqueeze_dim(1);
        let hidden = linear(&self.mlp.fc1, modulate(layer_norm(x.clone()), m[3].clone(), m[4].clone()), dtype);
        let y = linear(&self.mlp.fc2, gelu_tanh(hidden.cast(f32)), dtype);
        x + y.cast(f32) * m[5].clone().unsqueeze_dim(1)
    }
}

#[derive(Module, Debug)]
struct FinalLayer {
    ada_ln: Linear,
    linear: Linear,
}

#[derive(Module, Debug)]
pub struct DiT {
    x_embedder: PatchEmbed,
    t_embedder: TimestepEmbedder,
    s_embedder: Option<TimestepEmbedder>,
    y_embedder: LabelTable,
    /// The fixed position table [1, T, H]: a parameter without gradient, as in the official code.
    pos_embed: Param<Tensor<3>>,
    blocks: Vec<DiTBlock>,
    final_layer: FinalLayer,
    patch: usize,
    channels: usize,
    /// Tokens per side.
    side: usize,
    frequencies: usize,
    classes: usize,
    #[module(skip)]
    precision: Precision,
}

impl DiT {
    /// The same weights computing in another dtype.
    pub fn with_precision(self, precision: Precision) -> Self {
        DiT { precision, ..self }
    }

    /// The official `state_dict` name of a parameter given its module path here, for example
    /// `blocks.0.ada_ln.weight` -> `blocks.0.adaLN_modulation.1.weight`.
    pub fn official_name(&self, path: &str) -> String {
        path.split('.')
            .map(|part| match part {
                "ada_ln" => "adaLN_modulation.1",
                "mlp0" => "mlp.0",
                "mlp2" => "mlp.2",
                "table" => "embedding_table.weight",
                _ => part,
            })
            .collect::<Vec<_>>()
            .join(".")
            .replace("x_embedder.weight", "x_embedder.proj.weight")
            .replace("x_embedder.bias", "x_embedder.proj.bias")
    }

    /// # Shapes
    /// - x: [B, C, p h, p w]
    /// - output: [B, T, C p p], T = h w row-major, each patch channel-major as the convolution's weight
    fn patchify(&self, x: Tensor<4>) -> Tensor<3> {
        let [b, c, _, _] = x.dims();
        let (p, s) = (self.patch, self.side);
        x.reshape([b, c, s, p, s, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, s * s, c * p * p])
    }

    /// # Shapes
    /// - x: [B, T, p p C], the channel fastest within a patch
    /// - output: [B, C, p h, p w]
    fn unpatchify(&self, x: Tensor<3>) -> Tensor<4> {
        let [b, _, _] = x.dims();
        let (p, s, c) = (self.patch, self.side, self.channels);
        x.reshape([b, s, s, p, p, c]).permute([0, 5, 1, 3, 2, 4]).reshape([b, c, s * p, s * p])
    }
}

impl Network for DiT {
    fn forward(&self, x: Tensor<2>, c_t: Tensor<1>, c_s: Tensor<1>, y: Option<Tensor<2>>) -> Tensor<2> {
        let [b, d] = x.dims();
        let (side, p, ch) = (self.side * self.patch, self.patch, self.channels);
        let (device, dtype, f32) = (x.device(), self.precision.dtype(), FloatDType::F32);
        let weight = self.x_embedder.weight.val();
        let h = weight.dims()[0];
        let tokens = self.patchify(x.reshape([b, ch, side, side]).cast(dtype))
            .matmul(weight.cast(dtype).reshape([h, ch * p * p]).transpose().unsqueeze_dim(0))
            .cast(f32)
            + self.x_embedder.bias.val().reshape([1, 1, h]);
        let mut x = tokens + self.pos_embed.val();

        let mut c = self.t_embedder.forward(c_t, self.frequencies, dtype);
        if let Some(s) = &self.s_embedder {
            c = c + s.forward(c_s, self.frequencies, dtype);
        }
        // One-hot rows with the null column appended: an all-zero row selects the null row.
        let y = y.unwrap_or_else(|| Tensor::zeros([b, self.classes], &device));
        let null = y.clone().sum_dim(1).neg() + 1.0;
        let rows = if self.classes > 0 { Tensor::cat(vec![y, null], 1) } else { null };
        c = c + rows.matmul(self.y_embedder.table.val().transpose());

        for block in &self.blocks {
            x = block.forward(x, c.clone(), dtype);
        }
        let m: Vec<Tensor<2>> = linear(&self.final_layer.ada_ln, silu(c), dtype).cast(f32).chunk(2, 1);
        let out = linear(&self.final_layer.linear, modulate(layer_norm(x), m[0].clone(), m[1].clone()), dtype).cast(f32);
        self.unpatchify(out).reshape([b, d])
    }

    fn label_dim(&self) -> usize {
        self.classes
    }

    fn target(&self) -> Self {
        self.valid().with_precision(Precision::F32)
    }
}

impl Named for DiT {
    fn param_name(&self, path: &str) -> String {
        self.official_name(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patches in, patches out: unpatchify inverts patchify once the channel order within a patch
    /// is moved from the convolution's (C, p, p) to the output's (p, p, C).
    #[test]
    fn unpatchify_inverts_patchify() {
        let device = Device::flex();
        let net = DiTConfig::new().with_img_resolution(8).with_in_channels(3).with_hidden_size(8).with_depth(1).with_num_heads(2)
            .with_num_classes(2).init(&mut Rng::new(0), &device).unwrap();
        let values: Vec<f32> = (0..2 * 3 * 8 * 8).map(|v| v as f32).collect();
        let x = Tensor::<4>::from_data(TensorData::new(values.clone(), [2, 3, 8, 8]), &device);
        let patches = net.patchify(x).reshape([2, 16, 3, 2, 2]).permute([0, 1, 3, 4, 2]).reshape([2, 16, 12]);
        let back = net.unpatchify(patches).into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(back, values);
        assert!(DiTConfig::named("XL/2").unwrap().hidden_size == 1152 && DiTConfig::named("S/3").is_err());
        assert_eq!(net.official_name("blocks.0.ada_ln.weight"), "blocks.0.adaLN_modulation.1.weight");
        assert_eq!(net.official_name("x_embedder.weight"), "x_embedder.proj.weight");
    }
}
