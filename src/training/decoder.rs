//! A latent model's samples as images: the VAE its latents were encoded with, and their
//! normalisation undone. Sample grids, `imm sample` and `imm eval` decode through it.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use crate::Error;
use crate::data::latents::LatentNorm;
use crate::networks::vae::{Vae, VaeConfig};
use crate::training::encode::open_vae;
use crate::training::image_model::ImageModel;
use crate::training::presets::{Data, ImagePreset};

/// Turns a latent model's samples into images.
pub struct Decoder {
    vae: Vae,
    config: VaeConfig,
    norm: LatentNorm,
    /// [L, h, w] of one latent.
    shape: [usize; 3],
}

/// Some for a latent model, with its VAE's fingerprint where the model says it: its card says it
/// works on latents, or a cardless export (the official checkpoint) says so by its --preset.
pub fn latent_vae<'a>(model: &'a ImageModel, preset: Option<&ImagePreset>) -> Option<Option<&'a str>> {
    let vae = model.card.as_ref().and_then(|card| card["latents"]["vae"].as_str());
    (vae.is_some() || (model.card.is_none() && preset.is_some_and(|p| p.data == Data::Latents))).then_some(vae)
}

impl Decoder {
    /// The VAE at `path`, which must be the one whose fingerprint is `vae` where that is known.
    pub fn open(path: Option<&Path>, vae: Option<&str>, shape: [usize; 3], device: &Device) -> Result<Decoder, Error> {
        let path = path.ok_or_else(|| Error::new("this model works on VAE latents: pass --vae with the VAE they were encoded with, to decode them"))?;
        let (model, config, print) = open_vae(path, device)?;
        if vae.is_some_and(|vae| vae != print) {
            return Err(Error::new(format!("{} is not the VAE these latents were encoded with", path.display())));
        }
        Ok(Decoder { vae: model, config, norm: LatentNorm::default(), shape })
    }

    /// (channels, side) of the decoded images.
    pub fn image_shape(&self) -> (usize, usize) {
        (self.config.channels, self.shape[1] * self.config.downscale())
    }

    /// Images from `n` normalised latents, in batches.
    ///
    /// # Shapes
    /// - latents: n x [L, h, w] values
    /// - output: n x [C, H, W] values, about [-1, 1]
    pub fn decode(&self, latents: &[f32], device: &Device) -> Result<Vec<f32>, Error> {
        const BATCH: usize = 16;
        let [l, h, w] = self.shape;
        let mut out = Vec::new();
        for chunk in latents.chunks(BATCH * l * h * w) {
            let n = chunk.len() / (l * h * w);
            let raw = self.norm.raw(chunk, h * w);
            let images = self.vae.decode(Tensor::from_data(TensorData::new(raw, [n, l, h, w]), device));
            out.extend(crate::floats(images, "decoded images")?);
        }
        Ok(out)
    }
}
