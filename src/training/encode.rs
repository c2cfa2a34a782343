//! `imm encode`: an image folder (one sub-folder per class) through the Stable Diffusion VAE into
//! shards of posteriors (mean and std) with labels, the dataset of latent training. Each shard and
//! then the manifest is written under a temporary name and renamed, so an interrupted encoding
//! leaves whole shards only and continues after the last one.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use crate::Error;
use crate::training::run_dir::{create_dir, write_atomic, write_json};
use crate::data::folder::{list_image_folder, square};
use crate::data::latents::{LatentManifest, LatentNorm, fingerprint};
use crate::io::safetensors::{Stored, Tensors};
use crate::networks::Precision;
use crate::networks::vae::{Vae, VaeConfig};

/// What `imm encode` reads and writes.
pub struct EncodeRequest {
    pub data: PathBuf,
    pub vae: PathBuf,
    pub out: PathBuf,
    /// Side of the square the images are cropped and resized to.
    pub resolution: usize,
    /// Also encode each image flipped left to right.
    pub xflip: bool,
    /// Images per VAE call.
    pub batch: usize,
    /// Source images per shard.
    pub shard_images: usize,
    /// The VAE's compute dtype.
    pub precision: Precision,
}

/// A VAE file: diffusers' `AutoencoderKL` weights (the keys at the top level, or under `vae.` or
/// `param.` as in a golden file), its GroupNorm group count from a `config.json` beside it or the
/// golden manifest (the weights do not show it), and the file's fingerprint. Only 4 latent
/// channels are taken: the latents are normalised with Stable Diffusion's statistics.
pub fn open_vae(path: &Path, device: &Device) -> Result<(Vae, VaeConfig, String), Error> {
    let what = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| Error::new(format!("cannot read the VAE {what}: {e}")))?;
    let file = Tensors::parse(&bytes, &what)?;
    let prefix = ["", "vae.", "param."].into_iter().find(|p| file.get(&format!("{p}encoder.conv_in.weight")).is_some()).ok_or_else(|| {
        Error::new(format!("{what} is not a diffusers AutoencoderKL file (no encoder.conv_in.weight)"))
    })?;
    let beside = [path.with_file_name("config.json"), path.with_extension("json")];
    let groups = beside
        .iter()
        .filter_map(|p| serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(p).ok()?).ok())
        .find_map(|v| v["norm_num_groups"].as_u64().or_else(|| v["config"]["norm_num_groups"].as_u64()))
        .ok_or_else(|| {
            Error::new(format!(
                "{what}: no config.json beside it gives the VAE's GroupNorm group count (norm_num_groups); \
                 put the config.json that comes with these weights next to them"
            ))
        })? as usize;
    let (vae, config) = Vae::load(&file, prefix, groups, &what, device)?;
    let channels = LatentNorm::default().scale.len();
    if config.latent_channels != channels {
        return Err(Error::new(format!(
            "{what} has {} latent channels; the latents here are normalised with Stable Diffusion's statistics, for {channels}",
            config.latent_channels
        )));
    }
    Ok((vae, config, fingerprint(bytes)))
}

/// `imm encode`: see the module's comment. Prints progress, and a line at the end.
pub fn encode(request: &EncodeRequest, device: &Device) -> Result<(), Error> {
    let (files, classes) = list_image_folder(&request.data)?;
    request.precision.check(device)?;
    let (vae, config, vae_print) = open_vae(&request.vae, device)?;
    let vae = vae.with_dtype(request.precision.dtype());
    let side = request.resolution;
    let f = config.downscale();
    if side == 0 || side % f != 0 || config.channels != 3 {
        return Err(Error::new(format!("--resolution must be a positive multiple of {f} for this VAE (of RGB images), not {side}")));
    }
    // Paths relative to the folder: the same folder named another way is the same list.
    let relative = |p: &Path| p.strip_prefix(&request.data).unwrap_or(p).display().to_string();
    let listing = fingerprint(files.iter().flat_map(|(p, c)| format!("{}\t{c}\n", relative(p)).into_bytes()));
    let wanted = LatentManifest {
        vae: vae_print,
        precision: request.precision.name().to_string(),
        resolution: side,
        latent_shape: [config.latent_channels, side / f, side / f],
        xflip: request.xflip,
        classes,
        listing,
        images: files.len(),
        shard_images: request.shard_images,
        shards: Vec::new(),
    };
    let out = &request.out;
    let manifest_path = out.join(LatentManifest::FILE);
    let mut manifest = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => {
            let found: LatentManifest =
                serde_json::from_str(&text).map_err(|e| Error::new(format!("{} is damaged: {e}", manifest_path.display())))?;
            let differ = found.differences(&wanted);
            if !differ.is_empty() {
                return Err(Error::new(format!(
                    "{} holds latents of another {}; choose another --out",
                    out.display(),
                    differ.join(", ")
                )));
            }
            found
        }
        Err(_) => wanted,
    };
    create_dir(out)?;
    let total = manifest.shard_count();
    let done_images = (manifest.shards.len() * manifest.shard_images).min(manifest.images);
    if done_images > 0 {
        println!("Continuing {}: {} of {total} shards are written.", out.display(), manifest.shards.len());
    }
    let bar = ProgressBar::new(manifest.images as u64).with_position(done_images as u64);
    bar.set_style(
        ProgressStyle::with_template("encode [{bar:32}] {human_pos}/{human_len} images  {per_sec}  {elapsed} < {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let [l, h, w] = manifest.latent_shape;
    for index in manifest.shards.len()..total {
        let start = index * manifest.shard_images;
        let shard = &files[start..(start + manifest.shard_images).min(files.len())];
        let mut moments = Vec::with_capacity(shard.len() * 2 * l * h * w);
        let mut flipped = Vec::new();
        for chunk in shard.chunks(request.batch) {
            let pixels: Vec<Vec<u8>> = chunk.par_iter().map(|(file, _)| square(file, side, 3)).collect::<Result<_, _>>()?;
            let values: Vec<f32> = pixels.iter().flatten().map(|&v| v as f32 / 127.5 - 1.0).collect();
            let x = Tensor::<4>::from_data(TensorData::new(values, [chunk.len(), 3, side, side]), device);
            moments.extend(posterior(&vae, x.clone())?);
            if manifest.xflip {
                flipped.extend(posterior(&vae, x.flip([3]))?);
            }
            bar.inc(chunk.len() as u64);
        }
        let mut labels: Vec<f32> = shard.iter().map(|(_, c)| *c as f32).collect();
        let mut n = shard.len();
        if manifest.xflip {
            moments.extend(flipped);
            labels.extend_from_within(..);
            n *= 2;
        }
        let name = format!("shard-{index:06}.safetensors");
        let mut tensors = Tensors::default();
        tensors.tensors.insert("moments".into(), Stored { shape: vec![n, 2 * l, h, w], values: moments });
        tensors.tensors.insert("labels".into(), Stored { shape: vec![n], values: labels });
        tensors.metadata.insert("imm_latents".into(), serde_json::json!({"vae": manifest.vae, "resolution": side}).to_string());
        write_atomic(&out.join(&name), &tensors.to_bytes())?;
        manifest.shards.push(name);
        write_json(&manifest_path, &manifest)?;
    }
    bar.finish_and_clear();
    println!(
        "Encoded {} images of {} classes{} into {total} shard{} of latents {l}x{h}x{w} in {}.",
        manifest.images,
        manifest.classes.len(),
        if manifest.xflip { " (and their mirror images)" } else { "" },
        if total == 1 { "" } else { "s" },
        out.display()
    );
    Ok(())
}

/// Mean and std of the posterior, concatenated along the channels, on the host.
///
/// # Shapes
/// - x: [N, 3, H, W]
/// - output: N x [2L, h, w] values
fn posterior(vae: &Vae, x: Tensor<4>) -> Result<Vec<f32>, Error> {
    let posterior = vae.encode(x);
    let both = Tensor::cat(vec![posterior.mean, posterior.std], 1);
    crate::floats(both, "the latents")
}
