//! The image networks a preset or a weights file's card names: DDPM++ (SongUNet) or DiT, one type
//! for the trainer, the samplers and the page. A card's `net` is SongUNet's config as before, or
//! DiT's with `"network": "dit"`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::io::weights::Named;
use crate::networks::dit::{DiT, DiTConfig};
use crate::networks::{Network, Precision};
use crate::networks::songunet::{SongUNet, SongUNetConfig};
use crate::{Error, Rng};

#[derive(Clone, Debug, PartialEq)]
pub enum ImageNetConfig {
    SongUNet(SongUNetConfig),
    DiT(DiTConfig),
}

impl Serialize for ImageNetConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::SongUNet(c) => c.serialize(serializer),
            Self::DiT(c) => {
                let mut value = serde_json::to_value(c).map_err(serde::ser::Error::custom)?;
                value["network"] = "dit".into();
                value.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for ImageNetConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut value = Value::deserialize(deserializer)?;
        let dit = value.get("network").and_then(Value::as_str) == Some("dit");
        if let Some(o) = value.as_object_mut() {
            o.remove("network");
        }
        let result = if dit {
            serde_json::from_value(value).map(Self::DiT)
        } else {
            serde_json::from_value(value).map(Self::SongUNet)
        };
        result.map_err(serde::de::Error::custom)
    }
}

impl ImageNetConfig {
    pub fn in_channels(&self) -> usize {
        match self {
            Self::SongUNet(c) => c.in_channels,
            Self::DiT(c) => c.in_channels,
        }
    }

    pub fn img_resolution(&self) -> usize {
        match self {
            Self::SongUNet(c) => c.img_resolution,
            Self::DiT(c) => c.img_resolution,
        }
    }

    /// The number of classes of the label input; 0 without one.
    pub fn classes(&self) -> usize {
        match self {
            Self::SongUNet(c) => c.classes(),
            Self::DiT(c) => c.num_classes,
        }
    }

    /// The same network with a label input of `classes` classes (0: none).
    pub fn with_classes(self, classes: usize) -> Self {
        match self {
            Self::SongUNet(c) => Self::SongUNet(c.with_label_dim(Some(classes).filter(|&l| l > 0))),
            Self::DiT(c) => Self::DiT(c.with_num_classes(classes)),
        }
    }

    /// The same network on inputs of `channels` x `side` x `side` (latents of another VAE or
    /// resolution).
    pub fn with_input(self, channels: usize, side: usize) -> Self {
        match self {
            Self::SongUNet(c) => Self::SongUNet(SongUNetConfig { in_channels: channels, out_channels: channels, img_resolution: side, ..c }),
            Self::DiT(c) => Self::DiT(c.with_in_channels(channels).with_img_resolution(side)),
        }
    }

    /// The compute dtype.
    pub fn precision(&self) -> Precision {
        match self {
            Self::SongUNet(c) => c.precision.unwrap_or_default(),
            Self::DiT(c) => c.precision.unwrap_or_default(),
        }
    }

    /// The same network computing in `precision`.
    pub fn with_precision(self, precision: Precision) -> Self {
        match self {
            Self::SongUNet(c) => Self::SongUNet(SongUNetConfig { precision: Some(precision), ..c }),
            Self::DiT(c) => Self::DiT(DiTConfig { precision: Some(precision), ..c }),
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        match self {
            Self::SongUNet(c) => c.validate(),
            Self::DiT(c) => c.validate(),
        }
    }

    /// A lower bound of the parameter count, computed without allocating: a weights file must hold
    /// at least this many values for its card to be believed before the network is built.
    pub fn min_params(&self) -> u128 {
        match self {
            Self::SongUNet(c) => c.min_params(),
            Self::DiT(c) => {
                // Per block attention (4 h^2), MLP (2 h mlp) and adaLN (6 h temb); the time MLPs'
                // first layers; the patch embedding. f64 -> u128 saturates on a damaged card.
                let h = c.hidden_size as u128;
                let temb = h.saturating_mul(c.temb_mult as u128);
                let mlp = (c.hidden_size as f64 * c.mlp_ratio) as u128;
                let block = h.saturating_mul(4).saturating_mul(h).saturating_add(h.saturating_mul(2).saturating_mul(mlp)).saturating_add(h.saturating_mul(6).saturating_mul(temb));
                let embedders = (c.frequency_embedding_size as u128).saturating_mul(1 + c.s_embed as u128).saturating_mul(temb);
                let patch = h.saturating_mul(c.in_channels as u128).saturating_mul((c.patch_size as u128).saturating_pow(2));
                (c.depth as u128).saturating_mul(block).saturating_add(embedders).saturating_add(patch)
            }
        }
    }

    pub fn init(&self, rng: &mut Rng, device: &Device) -> Result<ImageNet, Error> {
        Ok(match self {
            Self::SongUNet(c) => ImageNet::SongUNet(c.init(rng, device)?),
            Self::DiT(c) => ImageNet::DiT(c.init(rng, device)?),
        })
    }
}

#[derive(Module, Debug)]
pub enum ImageNet {
    SongUNet(SongUNet),
    DiT(DiT),
}

impl ImageNet {
    /// The same weights computing in another dtype.
    pub fn with_precision(self, precision: Precision) -> Self {
        match self {
            Self::SongUNet(n) => Self::SongUNet(n.with_precision(precision)),
            Self::DiT(n) => Self::DiT(n.with_precision(precision)),
        }
    }
}

impl Network for ImageNet {
    fn forward(&self, x: Tensor<2>, c_t: Tensor<1>, c_s: Tensor<1>, y: Option<Tensor<2>>) -> Tensor<2> {
        match self {
            Self::SongUNet(n) => n.forward(x, c_t, c_s, y),
            Self::DiT(n) => n.forward(x, c_t, c_s, y),
        }
    }

    fn label_dim(&self) -> usize {
        match self {
            Self::SongUNet(n) => n.label_dim(),
            Self::DiT(n) => n.label_dim(),
        }
    }

    fn target(&self) -> Self {
        match self {
            Self::SongUNet(n) => Self::SongUNet(n.target()),
            Self::DiT(n) => Self::DiT(n.target()),
        }
    }
}

impl Named for ImageNet {
    /// burn names a variant's parameters under the variant: the official names leave it out.
    fn param_name(&self, path: &str) -> String {
        match self {
            Self::SongUNet(n) => n.param_name(path.strip_prefix("SongUNet.").unwrap_or(path)),
            Self::DiT(n) => n.param_name(path.strip_prefix("DiT.").unwrap_or(path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cards written before DiT (a bare SongUNet config) still read; DiT's carry their tag.
    #[test]
    fn cards_name_their_network() {
        let unet: ImageNetConfig = serde_json::from_str(r#"{"img_resolution": 28, "in_channels": 1, "out_channels": 1,
            "model_channels": 16, "channel_mult": [1, 2], "channel_mult_emb": 4, "channel_mult_noise": 1, "num_blocks": 1,
            "attn_resolutions": [7], "dropout": 0.0, "s_embed": true, "precision": null}"#)
            .unwrap();
        assert!(matches!(&unet, ImageNetConfig::SongUNet(c) if c.classes() == 0 && c.model_channels == 16));
        let dit = ImageNetConfig::DiT(DiTConfig::named("S/4").unwrap().with_num_classes(10));
        let text = serde_json::to_string(&dit).unwrap();
        assert!(text.contains(r#""network":"dit""#), "{text}");
        assert_eq!(serde_json::from_str::<ImageNetConfig>(&text).unwrap(), dit);
        let half = dit.clone().with_precision(Precision::F16);
        assert_eq!(half.precision(), Precision::F16);
        assert_eq!(serde_json::from_str::<ImageNetConfig>(&serde_json::to_string(&half).unwrap()).unwrap(), half);
        // A damaged card cannot make the network allocate more than its file holds.
        let ImageNetConfig::DiT(small) = &dit else { unreachable!() };
        let huge = ImageNetConfig::DiT(small.clone().with_mlp_ratio(1e15).with_depth(1).with_hidden_size(8).with_num_heads(2));
        assert!(huge.min_params() > 1e15 as u128, "{}", huge.min_params());
        let net = ImageNetConfig::DiT(DiTConfig::new().with_img_resolution(8).with_hidden_size(16).with_depth(1).with_num_heads(2).with_num_classes(3))
            .init(&mut Rng::new(0), &Device::flex())
            .unwrap();
        let names = crate::io::weights::named_params(&net);
        assert!(names.contains_key("blocks.0.adaLN_modulation.1.weight") && names.contains_key("y_embedder.embedding_table.weight"), "{:?}", names.keys());
    }
}
