//! DDPM++ (SongUNet) as in the official IMM code (lumalabs/imm `training/unets.py`, EDM's network
//! with a second time embedding for s): positional embedding, standard encoder and decoder,
//! resampling filter [1, 1] (2x2 average pooling down, nearest-neighbour up), GroupNorm eps 1e-6,
//! one attention head, skips scaled by sqrt(0.5). Parameters carry the official `state_dict` names
//! through [`SongUNet::official_name`], so PyTorch checkpoints load directly.

use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Dropout, DropoutConfig, GroupNorm, GroupNormConfig, Linear, PaddingConfig2d};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, FloatDType, Tensor, TensorData};

use crate::io::weights::Named;
use crate::kernels::conv::conv2d;
use crate::kernels::resample::resample;
use crate::kernels::group_norm::group_norm;
use crate::networks::{Network, Precision, cast, positional_embedding};
use crate::{Error, Rng};

#[derive(Config, Debug, PartialEq)]
pub struct SongUNetConfig {
    /// Image side in pixels (a multiple of 2^(levels - 1)).
    #[config(default = 32)]
    pub img_resolution: usize,
    #[config(default = 3)]
    pub in_channels: usize,
    #[config(default = 3)]
    pub out_channels: usize,
    /// Base channel count.
    #[config(default = 128)]
    pub model_channels: usize,
    /// Channel multiplier per resolution level.
    #[config(default = "vec![2, 2, 2]")]
    pub channel_mult: Vec<usize>,
    /// Embedding width = model_channels * channel_mult_emb.
    #[config(default = 4)]
    pub channel_mult_emb: usize,
    /// Sinusoid channels = model_channels * channel_mult_noise.
    #[config(default = 1)]
    pub channel_mult_noise: usize,
    /// Residual blocks per resolution.
    #[config(default = 4)]
    pub num_blocks: usize,
    /// Resolutions with self-attention.
    #[config(default = "vec![16]")]
    pub attn_resolutions: Vec<usize>,
    #[config(default = 0.0)]
    pub dropout: f64,
    /// A second time embedding for s, added after its own two-layer map.
    #[config(default = true)]
    pub s_embed: bool,
    /// Classes of the label input (`map_label`); none for an unconditional network (and lets
    /// configs saved before labels load).
    #[config(default = "None")]
    pub label_dim: Option<usize>,
    /// The dtype convolutions, linear layers and attention products run in; none is f32 (and lets
    /// configs saved before this option load).
    #[config(default = "None")]
    pub precision: Option<Precision>,
}

/// A convolution with its parameters in `dtype`, through the CPU kernels on Flex.
///
/// # Shapes
/// - x: [B, C_in, H, W], in `dtype`
/// - output: [B, C_out, H, W], in `dtype`
fn conv(layer: &Conv2d, x: Tensor<4>, dtype: FloatDType) -> Tensor<4> {
    let layer = cast(layer, dtype);
    let padding = layer.weight.dims()[2] / 2;
    conv2d(x, layer.weight.val(), layer.bias.as_ref().map(Param::val), padding)
}

/// GroupNorm in f32 whatever the compute dtype, then SiLU if `then_silu`: one pass each way
/// through the CPU kernel on Flex.
///
/// # Shapes
/// - x: [B, C, H, W]
/// - output: [B, C, H, W], in `dtype`
fn norm(layer: &GroupNorm, x: Tensor<4>, dtype: FloatDType, then_silu: bool) -> Tensor<4> {
    let (c, device) = (layer.num_channels, x.device());
    let gamma = layer.gamma.as_ref().map_or_else(|| Tensor::ones([c], &device), Param::val);
    let beta = layer.beta.as_ref().map_or_else(|| Tensor::zeros([c], &device), Param::val);
    group_norm(x.cast(FloatDType::F32), gamma, beta, layer.num_groups, layer.epsilon, then_silu).cast(dtype)
}

/// How a block changes resolution; the [1, 1] filter of DDPM++ makes these exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resample {
    Keep,
    /// 2x2 average pooling.
    Down,
    /// Nearest-neighbour upsampling by 2.
    Up,
}

impl Resample {
    /// # Shapes
    /// - x: [B, C, H, W]
    /// - output: [B, C, H/2, W/2] (down), [B, C, 2H, 2W] (up) or unchanged
    fn apply(self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Resample::Keep => x,
            Resample::Down => resample(x, false),
            Resample::Up => resample(x, true),
        }
    }
}

/// Initial weights from our own generator, xavier-uniform as the official code, so that a seed fixes
/// them on every backend.
struct Init<'a> {
    rng: &'a mut Rng,
    device: &'a Device,
}

impl Init<'_> {
    fn uniform(&mut self, n: usize, fan_in: usize, fan_out: usize, gain: f64) -> Vec<f32> {
        let bound = gain * (6.0 / (fan_in + fan_out) as f64).sqrt();
        (0..n).map(|_| self.rng.uniform_in(-bound, bound) as f32).collect()
    }

    fn zeros(&self, n: usize) -> Param<Tensor<1>> {
        Param::from_data(TensorData::new(vec![0f32; n], [n]), self.device)
    }

    fn linear(&mut self, d_in: usize, d_out: usize) -> Linear {
        let w = self.uniform(d_in * d_out, d_in, d_out, 1.0);
        Linear { weight: Param::from_data(TensorData::new(w, [d_in, d_out]), self.device), bias: Some(self.zeros(d_out)) }
    }

    fn conv(&mut self, c_in: usize, c_out: usize, kernel: usize, gain: f64) -> Conv2d {
        let pad = kernel / 2;
        let mut conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
            .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
            .init(self.device);
        let w = self.uniform(c_out * c_in * kernel * kernel, c_in * kernel * kernel, c_out * kernel * kernel, gain);
        conv.weight = Param::from_data(TensorData::new(w, [c_out, c_in, kernel, kernel]), self.device);
        conv.bias = Some(self.zeros(c_out));
        conv
    }

    /// GroupNorm as the official code: min(32, C / 4) groups, which must divide C.
    fn norm(&self, channels: usize) -> Result<GroupNorm, Error> {
        let groups = 32.min(channels / 4);
        if groups == 0 || channels % groups != 0 {
            return Err(Error::new(format!("GroupNorm cannot split {channels} channels into min(32, C / 4) groups")));
        }
        Ok(GroupNormConfig::new(groups, channels).with_epsilon(1e-6).init(self.device))
    }
}

/// The official block init: the last conv of each branch starts near zero.
const INIT_ZERO: f64 = 1e-5;

#[derive(Module, Debug)]
struct UNetBlock {
    norm0: GroupNorm,
    conv0: Conv2d,
    affine: Linear,
    norm1: GroupNorm,
    conv1: Conv2d,
    skip: Option<Conv2d>,
    norm2: Option<GroupNorm>,
    qkv: Option<Conv2d>,
    proj: Option<Conv2d>,
    dropout: Dropout,
    in_channels: usize,
    #[module(skip)]
    resample: Resample,
}

impl UNetBlock {
    fn new(
        init: &mut Init,
        c_in: usize,
        c_out: usize,
        emb: usize,
        resample: Resample,
        attention: bool,
        dropout: f64,
    ) -> Result<Self, Error> {
        let needs_skip = c_in != c_out || resample != Resample::Keep;
        let norm2 = if attention { Some(init.norm(c_out)?) } else { None };
        Ok(UNetBlock {
            norm0: init.norm(c_in)?,
            conv0: init.conv(c_in, c_out, 3, 1.0),
            affine: init.linear(emb, c_out),
            norm1: init.norm(c_out)?,
            conv1: init.conv(c_out, c_out, 3, INIT_ZERO),
            skip: needs_skip.then(|| init.conv(c_in, c_out, 1, 1.0)),
            norm2,
            qkv: attention.then(|| init.conv(c_out, 3 * c_out, 1, 0.2f64.sqrt())),
            proj: attention.then(|| init.conv(c_out, c_out, 1, INIT_ZERO)),
            dropout: DropoutConfig::new(dropout).init(),
            in_channels: c_in,
            resample,
        })
    }

    /// # Shapes
    /// - x: [B, C_in, H, W], emb: [B, E], both in `dtype`
    /// - output: [B, C_out, H', W'] in `dtype`, with H' = H/2 (down), 2H (up) or H
    fn forward(&self, x: Tensor<4>, emb: Tensor<2>, dtype: FloatDType) -> Tensor<4> {
        let skip_scale = std::f32::consts::FRAC_1_SQRT_2;
        let orig = x.clone();
        let h = conv(&self.conv0, self.resample.apply(norm(&self.norm0, x, dtype, true)), dtype);
        let [b, c, _, _] = h.dims();
        let h = norm(&self.norm1, h + cast(&self.affine, dtype).forward(emb).reshape([b, c, 1, 1]), dtype, true);
        let h = conv(&self.conv1, self.dropout.forward(h), dtype);
        let skip = match &self.skip {
            Some(skip) => conv(skip, self.resample.apply(orig), dtype),
            None => orig,
        };
        let x = (h + skip).mul_scalar(skip_scale);
        match (&self.norm2, &self.qkv, &self.proj) {
            (Some(norm2), Some(qkv), Some(proj)) => {
                let [_, _, height, width] = x.dims();
                let n = height * width;
                // Channels of qkv interleave q, k, v: channel 3c + j is part j of channel c.
                let qkv = conv(qkv, norm(norm2, x.clone(), dtype, false), dtype).reshape([b, c, 3, n]);
                let part = |j: usize| qkv.clone().slice([0..b, 0..c, j..j + 1, 0..n]).reshape([b, c, n]);
                let (q, k, v) = (part(0), part(1), part(2));
                let logits = q.swap_dims(1, 2).matmul(k).div_scalar((c as f32).sqrt());
                let w = softmax(logits.cast(FloatDType::F32), 2).cast(dtype);
                let a = v.matmul(w.swap_dims(1, 2)).reshape([b, c, height, width]);
                (conv(proj, a, dtype) + x).mul_scalar(skip_scale)
            }
            _ => x,
        }
    }
}

#[derive(Module, Debug)]
pub struct SongUNet {
    map_layer0: Linear,
    map_layer1: Linear,
    map_layer0_s: Option<Linear>,
    map_layer1_s: Option<Linear>,
    map_label: Option<Linear>,
    enc_conv: Conv2d,
    enc: Vec<UNetBlock>,
    dec: Vec<UNetBlock>,
    dec_aux_norm: GroupNorm,
    dec_aux_conv: Conv2d,
    noise_channels: usize,
    in_channels: usize,
    resolution: usize,
    #[module(skip)]
    precision: Precision,
    /// Official names of the blocks in `enc` and `dec`, such as `16x16_block0`.
    #[module(skip)]
    enc_keys: Vec<String>,
    #[module(skip)]
    dec_keys: Vec<String>,
}

impl SongUNetConfig {
    pub fn validate(&self) -> Result<(), Error> {
        let levels = self.channel_mult.len();
        if levels == 0 || levels > 16 || self.model_channels < 4 || self.img_resolution == 0 {
            return Err(Error::new("SongUNet needs 1 to 16 levels, model_channels >= 4 and a resolution"));
        }
        if self.channel_mult.contains(&0) || self.channel_mult_emb == 0 || self.in_channels == 0 {
            return Err(Error::new("channel multipliers and in_channels must be at least 1"));
        }
        if self.img_resolution % (1 << (levels - 1)) != 0 {
            return Err(Error::new(format!(
                "image resolution {} cannot be halved {} times",
                self.img_resolution,
                levels - 1
            )));
        }
        if self.in_channels != self.out_channels {
            return Err(Error::new("in_channels and out_channels must be equal: f adds the network's output to x_t"));
        }
        if self.model_channels * self.channel_mult_noise < 4 || !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::new("need at least 4 embedding channels and 0 <= dropout < 1"));
        }
        Ok(())
    }

    /// The number of classes of the label input; 0 without one.
    pub fn classes(&self) -> usize {
        self.label_dim.unwrap_or(0)
    }

    /// A lower bound of the parameter count, computed without allocating (the 3x3 convolutions of
    /// the encoder's blocks): a weights file must hold at least this many values for its card to
    /// be believed before the network is built.
    pub fn min_params(&self) -> u128 {
        let mc = self.model_channels as u128;
        let (mut cout, mut total) = (mc, 9u128.saturating_mul(self.in_channels as u128).saturating_mul(mc));
        for &mult in &self.channel_mult {
            for _ in 0..self.num_blocks {
                let cin = cout;
                cout = mc.saturating_mul(mult as u128);
                total = total.saturating_add(9u128.saturating_mul(cin.saturating_add(cout)).saturating_mul(cout));
            }
        }
        total
    }

    pub fn init(&self, rng: &mut Rng, device: &Device) -> Result<SongUNet, Error> {
        self.validate()?;
        let precision = self.precision.unwrap_or_default();
        precision.check(device)?;
        let mut init = Init { rng, device };
        let mc = self.model_channels;
        let (emb, noise) = (mc * self.channel_mult_emb, mc * self.channel_mult_noise);
        let dropout = self.dropout;
        let map_layer0 = init.linear(noise, emb);
        let map_layer1 = init.linear(emb, emb);
        let (map_layer0_s, map_layer1_s) = if self.s_embed {
            (Some(init.linear(noise, emb)), Some(init.linear(emb, emb)))
        } else {
            (None, None)
        };
        let map_label = (self.classes() > 0).then(|| init.linear(self.classes(), noise));

        let (mut enc, mut enc_keys, mut skips) = (Vec::new(), Vec::new(), vec![mc]);
        let enc_conv = init.conv(self.in_channels, mc, 3, 1.0);
        let mut cout = mc;
        for (level, &mult) in self.channel_mult.iter().enumerate() {
            let res = self.img_resolution >> level;
            if level > 0 {
                enc.push(UNetBlock::new(&mut init, cout, cout, emb, Resample::Down, false, dropout)?);
                enc_keys.push(format!("{res}x{res}_down"));
                skips.push(cout);
            }
            for idx in 0..self.num_blocks {
                let cin = cout;
                cout = mc * mult;
                let attn = self.attn_resolutions.contains(&res);
                enc.push(UNetBlock::new(&mut init, cin, cout, emb, Resample::Keep, attn, dropout)?);
                enc_keys.push(format!("{res}x{res}_block{idx}"));
                skips.push(cout);
            }
        }

        let (mut dec, mut dec_keys) = (Vec::new(), Vec::new());
        let levels = self.channel_mult.len();
        for (level, &mult) in self.channel_mult.iter().enumerate().rev() {
            let res = self.img_resolution >> level;
            if level == levels - 1 {
                dec.push(UNetBlock::new(&mut init, cout, cout, emb, Resample::Keep, true, dropout)?);
                dec_keys.push(format!("{res}x{res}_in0"));
                dec.push(UNetBlock::new(&mut init, cout, cout, emb, Resample::Keep, false, dropout)?);
                dec_keys.push(format!("{res}x{res}_in1"));
            } else {
                dec.push(UNetBlock::new(&mut init, cout, cout, emb, Resample::Up, false, dropout)?);
                dec_keys.push(format!("{res}x{res}_up"));
            }
            for idx in 0..=self.num_blocks {
                let cin = cout + skips.pop().expect("one skip per encoder output");
                cout = mc * mult;
                let attn = idx == self.num_blocks && self.attn_resolutions.contains(&res);
                dec.push(UNetBlock::new(&mut init, cin, cout, emb, Resample::Keep, attn, dropout)?);
                dec_keys.push(format!("{res}x{res}_block{idx}"));
            }
        }
        let dec_aux_norm = init.norm(cout)?;
        let dec_aux_conv = init.conv(cout, self.out_channels, 3, INIT_ZERO);
        Ok(SongUNet {
            map_layer0,
            map_layer1,
            map_layer0_s,
            map_layer1_s,
            map_label,
            enc_conv,
            enc,
            dec,
            dec_aux_norm,
            dec_aux_conv,
            noise_channels: noise,
            in_channels: self.in_channels,
            resolution: self.img_resolution,
            precision,
            enc_keys,
            dec_keys,
        })
    }
}

impl SongUNet {
    /// The same weights computing in another dtype.
    pub fn with_precision(self, precision: Precision) -> Self {
        SongUNet { precision, ..self }
    }

    /// The official `state_dict` name of a parameter given its module path here, for example
    /// `enc.3.norm0.gamma` -> `enc.16x16_block0.norm0.weight`.
    pub fn official_name(&self, path: &str) -> String {
        let r = self.resolution;
        let mut parts: Vec<String> = path.split('.').map(str::to_string).collect();
        match parts[0].as_str() {
            "enc_conv" => parts[0] = format!("enc.{r}x{r}_conv"),
            "dec_aux_norm" => parts[0] = format!("dec.{r}x{r}_aux_norm"),
            "dec_aux_conv" => parts[0] = format!("dec.{r}x{r}_aux_conv"),
            "enc" | "dec" if parts.len() > 1 => {
                let keys = if parts[0] == "enc" { &self.enc_keys } else { &self.dec_keys };
                if let Some(key) = parts[1].parse::<usize>().ok().and_then(|i| keys.get(i)) {
                    parts[1] = key.clone();
                }
            }
            _ => {}
        }
        if let Some(last) = parts.last_mut() {
            match last.as_str() {
                "gamma" => *last = "weight".into(),
                "beta" => *last = "bias".into(),
                _ => {}
            }
        }
        parts.join(".")
    }

    /// Sinusoids of a time input in DDPM++'s order (sin, then cos), plus `label` (the t path's
    /// class embedding), through a two-layer map.
    ///
    /// # Shapes
    /// - c: [B]; label: [B, noise channels] in the compute dtype
    /// - output: [B, E], in the compute dtype
    fn embed(&self, c: Tensor<1>, layer0: &Linear, layer1: &Linear, label: Option<Tensor<2>>) -> Tensor<2> {
        let dtype = self.precision.dtype();
        let half = self.noise_channels / 2;
        let cos_sin = positional_embedding(c, self.noise_channels);
        let [b, _] = cos_sin.dims();
        let sin_cos = Tensor::cat(
            vec![cos_sin.clone().slice([0..b, half..2 * half]), cos_sin.slice([0..b, 0..half])],
            1,
        )
        .cast(dtype);
        let input = match label {
            Some(label) => sin_cos + label,
            None => sin_cos,
        };
        cast(layer1, dtype).forward(silu(cast(layer0, dtype).forward(input)))
    }

    /// The official `map_label` of one-hot labels scaled by sqrt(L); None (all null) leaves its bias.
    ///
    /// # Shapes
    /// - y: [B, L]
    /// - output: [B, noise channels], in the compute dtype
    fn embed_label(&self, y: Option<Tensor<2>>, b: usize, device: &Device) -> Option<Tensor<2>> {
        let layer = self.map_label.as_ref()?;
        let l = layer.weight.dims()[0];
        let y = y.unwrap_or_else(|| Tensor::zeros([b, l], device));
        let dtype = self.precision.dtype();
        Some(cast(layer, dtype).forward(y.mul_scalar((l as f32).sqrt()).cast(dtype)))
    }
}

impl Network for SongUNet {
    fn forward(&self, x: Tensor<2>, c_t: Tensor<1>, c_s: Tensor<1>, y: Option<Tensor<2>>) -> Tensor<2> {
        let [b, d] = x.dims();
        let r = self.resolution;
        let dtype = self.precision.dtype();
        let label = self.embed_label(y, b, &x.device());
        let mut x = x.reshape([b, self.in_channels, r, r]).cast(dtype);
        let mut emb = self.embed(c_t, &self.map_layer0, &self.map_layer1, label);
        if let (Some(l0), Some(l1)) = (&self.map_layer0_s, &self.map_layer1_s) {
            emb = emb + self.embed(c_s, l0, l1, None);
        }
        let emb = silu(emb);

        x = conv(&self.enc_conv, x, dtype);
        let mut skips = vec![x.clone()];
        for block in &self.enc {
            x = block.forward(x, emb.clone(), dtype);
            skips.push(x.clone());
        }
        for block in &self.dec {
            if x.dims()[1] != block.in_channels {
                x = Tensor::cat(vec![x, skips.pop().expect("one skip per decoder block")], 1);
            }
            x = block.forward(x, emb.clone(), dtype);
        }
        let out = conv(&self.dec_aux_conv, norm(&self.dec_aux_norm, x, dtype, true), dtype);
        out.cast(FloatDType::F32).reshape([b, d])
    }

    fn label_dim(&self) -> usize {
        self.map_label.as_ref().map_or(0, |layer| layer.weight.dims()[0])
    }

    fn target(&self) -> Self {
        self.valid().with_precision(Precision::F32)
    }
}

impl Named for SongUNet {
    fn param_name(&self, path: &str) -> String {
        self.official_name(path)
    }
}
