//! Latents of the Stable Diffusion VAE as the official ImageNet code feeds them to the network:
//! stored posteriors (mean and std, 8 channels) re-sampled as mean + std eps at each load, then
//! normalised per channel to z = 0.5 (raw - raw_mean) / raw_std, as one f32 scale and bias; and
//! the manifest of a folder of encoded shards, and the training batches drawn from one.

use serde::{Deserialize, Serialize};

use crate::data::{Dataset, LabelledDraw};
use crate::io::safetensors::Mapped;
use crate::{Error, Labels};

/// The official constants of `stabilityai/sd-vae-ft-ema` latents of ImageNet-256.
pub const RAW_MEAN: [f64; 4] = [0.86488, -0.27787343, 0.21616915, 0.3738409];
pub const RAW_STD: [f64; 4] = [4.85503674, 5.31922414, 3.93725398, 3.9870003];
/// The normalised latents' mean and std.
const FINAL_MEAN: f64 = 0.0;
const FINAL_STD: f64 = 0.5;

/// z = raw scale + bias per channel, computed in f32 as the official wrapper does.
#[derive(Clone, Debug, PartialEq)]
pub struct LatentNorm {
    pub scale: Vec<f32>,
    pub bias: Vec<f32>,
}

impl Default for LatentNorm {
    fn default() -> Self {
        LatentNorm::new(&RAW_MEAN, &RAW_STD)
    }
}

impl LatentNorm {
    pub fn new(raw_mean: &[f64], raw_std: &[f64]) -> Self {
        let scale: Vec<f64> = raw_std.iter().map(|s| FINAL_STD / s).collect();
        let bias = raw_mean.iter().zip(&scale).map(|(m, s)| (FINAL_MEAN - m * s) as f32).collect();
        LatentNorm { scale: scale.into_iter().map(|s| s as f32).collect(), bias }
    }

    pub fn channels(&self) -> usize {
        self.scale.len()
    }

    /// Normalised latents from one stored posterior and its noise.
    ///
    /// # Shapes
    /// - moments: [2L, h, w] (mean, then std), eps: [L, h, w], as flat slices
    /// - output: [L, h, w]
    pub fn sample(&self, moments: &[f32], eps: &[f32]) -> Vec<f32> {
        let n = eps.len();
        let per_channel = n / self.channels();
        let (mean, std) = moments.split_at(n);
        (0..n)
            .map(|i| {
                let c = i / per_channel;
                (mean[i] + eps[i] * std[i]) * self.scale[c] + self.bias[c]
            })
            .collect()
    }

    /// The VAE decoder's input from normalised latents, (z - bias) / scale.
    ///
    /// # Shapes
    /// - z: [..., L, h, w] as a flat slice of whole samples
    /// - output: the same shape
    pub fn raw(&self, z: &[f32], per_channel: usize) -> Vec<f32> {
        z.iter().enumerate().map(|(i, v)| {
            let c = (i / per_channel) % self.channels();
            (v - self.bias[c]) / self.scale[c]
        }).collect()
    }
}

/// What `imm encode` has written into a folder of latents (its `latents.json`), kept up to date
/// shard by shard so that an interrupted encoding resumes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatentManifest {
    /// FNV-1a 64 of the VAE file, hex: latents of another VAE are refused.
    pub vae: String,
    /// The dtype the VAE computed in (f32, or f16 as the official code).
    pub precision: String,
    /// Side of the square images encoded, pixels.
    pub resolution: usize,
    /// [L, h, w] of one latent.
    pub latent_shape: [usize; 3],
    /// Whether each shard also holds the x-flipped copy of each of its images, after them.
    pub xflip: bool,
    pub classes: Vec<String>,
    /// FNV-1a 64 of the source files' paths and classes, hex: another image list is refused.
    pub listing: String,
    /// Source images in all.
    pub images: usize,
    /// Source images per shard (the last may hold fewer).
    pub shard_images: usize,
    /// The shards written so far, in order.
    pub shards: Vec<String>,
}

impl LatentManifest {
    pub const FILE: &str = "latents.json";

    /// The manifest of `dir`, which must be fully encoded.
    pub fn read(dir: &std::path::Path) -> Result<LatentManifest, Error> {
        let path = dir.join(Self::FILE);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::new(format!("{} is not a folder of latents from `imm encode` ({}: {e})", dir.display(), path.display())))?;
        let manifest: LatentManifest = serde_json::from_str(&text).map_err(|e| Error::new(format!("{} is damaged: {e}", path.display())))?;
        if manifest.images == 0 || manifest.shard_images == 0 {
            return Err(Error::new(format!("{} is damaged: it lists no images, or shards of no images", path.display())));
        }
        if !manifest.complete() {
            return Err(Error::new(format!(
                "{} is not fully encoded ({} of {} shards): run the same `imm encode` again to finish it",
                dir.display(),
                manifest.shards.len(),
                manifest.shard_count()
            )));
        }
        Ok(manifest)
    }

    pub fn shard_count(&self) -> usize {
        self.images.div_ceil(self.shard_images)
    }

    pub fn complete(&self) -> bool {
        self.shards.len() == self.shard_count()
    }

    /// The fields that must agree for a folder to be continued, or read as one dataset, with
    /// `other`; empty when they all do.
    pub fn differences(&self, other: &LatentManifest) -> Vec<&'static str> {
        let mut differ = Vec::new();
        for (name, same) in [
            ("VAE", self.vae == other.vae),
            ("precision", self.precision == other.precision),
            ("resolution", self.resolution == other.resolution),
            ("latent shape", self.latent_shape == other.latent_shape),
            ("x-flip", self.xflip == other.xflip),
            ("image list", self.listing == other.listing && self.classes == other.classes && self.images == other.images),
            ("shard size", self.shard_images == other.shard_images),
        ] {
            if !same {
                differ.push(name);
            }
        }
        differ
    }
}

/// [`crate::fnv1a`] of some bytes as 16 hex digits.
pub fn fingerprint(bytes: impl IntoIterator<Item = u8>) -> String {
    format!("{:016x}", crate::fnv1a(bytes))
}

/// Random training batches of normalised latents from a folder that `imm encode` wrote, read in
/// place from its shards mapped into memory: each draw re-samples mean + std eps of its posterior,
/// then normalises it. A batch depends only on the seed and the number of latents drawn before
/// it, as with images.
pub struct LatentData {
    /// Each shard with the index of its first posterior; `moments` [n, 2L, h, w] in each.
    shards: Vec<(usize, Mapped)>,
    count: usize,
    /// [L, h, w] of one latent.
    shape: [usize; 3],
    norm: LatentNorm,
    /// Each posterior's class, until [`LatentData::with_labels`] takes them.
    labels: Vec<usize>,
    draw: LabelledDraw,
    seed: u64,
    /// Latents drawn so far.
    pub drawn: u64,
}

impl LatentData {
    /// The shards listed in `dir`'s manifest, which must be complete; each must hold what the
    /// manifest says (its VAE, resolution and latent shape).
    pub fn open(dir: &std::path::Path, seed: u64) -> Result<(LatentData, LatentManifest), Error> {
        let manifest = LatentManifest::read(dir)?;
        let path = dir.join(LatentManifest::FILE);
        let [l, h, w] = manifest.latent_shape;
        let (mut shards, mut labels) = (Vec::new(), Vec::new());
        for name in &manifest.shards {
            let file = dir.join(name);
            let shard = Mapped::open(&file)?;
            let stamp: Option<serde_json::Value> = shard.metadata.get("imm_latents").and_then(|t| serde_json::from_str(t).ok());
            let same_source = stamp.is_some_and(|s| s["vae"] == manifest.vae.as_str() && s["resolution"] == manifest.resolution);
            let n = shard.shape("labels").map_or(0, |y| y[0]);
            let fits = matches!((shard.shape("moments"), shard.shape("labels")), (Some(m), Some(y)) if m[1..] == [2 * l, h, w] && y == [m[0]]);
            if !same_source || !fits {
                return Err(Error::new(format!(
                    "{} is not a shard of this folder's VAE, resolution and latent shape ({}); encode the folder again",
                    file.display(),
                    path.display()
                )));
            }
            let first = labels.len();
            labels.extend(shard.values("labels", 0..n).iter().map(|&v| v as usize));
            shards.push((first, shard));
        }
        let count = labels.len();
        let data = LatentData { shards, count, shape: manifest.latent_shape, norm: LatentNorm::default(), labels, draw: LabelledDraw::default(), seed, drawn: 0 };
        Ok((data, manifest))
    }

    /// The posterior (mean and std, [2L, h, w]) of latent `index`.
    fn moments(&self, index: usize) -> Vec<f32> {
        let (first, shard) = &self.shards[self.shards.partition_point(|(first, _)| *first <= index) - 1];
        let per = 2 * self.dim();
        shard.values("moments", (index - first) * per..(index - first + 1) * per)
    }
}

impl LatentData {
    /// Batches that carry their latents' labels, as [`crate::data::images::ImageData::with_labels`].
    pub fn with_labels(self, classes: usize, label_dropout: f64, group: usize) -> Result<Self, Error> {
        let draw = LabelledDraw::new(self.labels.clone(), classes, label_dropout, group)?;
        Ok(Self { draw, ..self })
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// [L, h, w] of one latent.
    pub fn shape(&self) -> [usize; 3] {
        self.shape
    }

    pub fn norm(&self) -> &LatentNorm {
        &self.norm
    }
}

impl Dataset for LatentData {
    fn skip_to(&mut self, drawn: u64) {
        self.drawn = drawn;
    }

    fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    fn classes(&self) -> usize {
        self.draw.classes()
    }

    fn sample(&mut self, n: usize) -> Vec<f32> {
        self.sample_labelled(n).0
    }

    fn sample_labelled(&mut self, n: usize) -> (Vec<f32>, Option<Labels>) {
        let dim = self.dim();
        let mut out = Vec::with_capacity(n * dim);
        let labels = self.draw.batch(self.seed, self.drawn, n, self.count, |rng, index| {
            let eps = rng.normal_vec(dim, 1.0);
            out.extend(self.norm.sample(&self.moments(index), &eps));
        });
        self.drawn += n as u64;
        (out, labels)
    }
}
