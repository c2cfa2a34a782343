//! Sampling a weights file: `imm sample`'s grids and .npz files, the batches that `imm eval`
//! measures, and `imm export`'s f16 copies.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};

use crate::io::npz::npz_u8;
use crate::io::plot::image_grid;
use crate::io::safetensors::Tensors;
use crate::io::write_atomic;
use crate::method::sampler::{Grid, Sampler};
use crate::training::decoder::{Decoder, latent_vae};
use crate::training::image_model::{Classes, ImageModel};
use crate::training::presets::ImagePreset;
use crate::{Error, Rng};

/// Images per row of a sample grid.
pub const GRID_COLUMNS: usize = 10;

/// What `imm sample` makes.
pub struct SampleRequest {
    pub weights: PathBuf,
    /// Used when the weights file does not say how it was trained (e.g. an export of the official checkpoint).
    pub preset: Option<ImagePreset>,
    pub steps: usize,
    pub sampler: Option<Sampler>,
    pub grid: Option<Grid>,
    pub seed: u64,
    pub count: usize,
    /// Class of a conditional model: `all` (one grid row per class; the default), an index or a name.
    pub class: Option<String>,
    /// Classifier-free guidance scale w (1: none).
    pub cfg: f64,
    /// A .png grid or an .npz of uint8 images [N, H, W, C] under `arr_0`.
    pub out: PathBuf,
    /// A latent model's VAE, which decodes its samples.
    pub vae: Option<PathBuf>,
}

/// Samples a weights file into a PNG grid or an .npz for FID tools.
pub fn sample(request: &SampleRequest, device: &Device) -> Result<(), Error> {
    let file = Tensors::read(&request.weights)?;
    let what = request.weights.display().to_string();
    if !file.metadata.contains_key("imm") && request.preset.is_none() {
        return Err(Error::new(format!("{what} does not say which network it holds; pass --preset")));
    }
    let mut model = ImageModel::load(&file, &what, request.preset.as_ref(), device)?;
    model.method.choose_sampling(request.grid.clone(), request.sampler)?;
    model.check_steps(request.steps)?;
    let classes = model.classes(request.class.as_deref(), GRID_COLUMNS)?;
    // Guidance on a model without labels fails here, before any sampling.
    model.condition(classes, request.cfg, 0, 0)?;
    let (mut c, mut side) = (model.config.in_channels(), model.config.img_resolution());
    let decoder = latent_vae(&model, request.preset.as_ref()).map(|vae| Decoder::open(request.vae.as_deref(), vae, [c, side, side], device)).transpose()?;
    let mut images = Vec::new();
    generate(&model, (classes, request.cfg), request.steps, request.count, request.seed, device, |batch, _| {
        images.extend(match &decoder {
            Some(decoder) => decoder.decode(&batch, device)?,
            None => batch,
        });
        Ok(())
    })?;
    if let Some(decoder) = &decoder {
        (c, side) = decoder.image_shape();
    }
    let is_npz = request.out.extension().is_some_and(|e| e == "npz");
    if is_npz {
        write_atomic(&request.out, &npz_u8(&images, request.count, c, side)?)?;
    } else {
        let per_row = GRID_COLUMNS * c * side * side;
        let rows: Vec<(String, Vec<f32>)> = images.chunks(per_row).map(|r| (String::new(), r.to_vec())).collect();
        image_grid(&rows, c, side, 2, &request.out)?;
    }
    println!("Wrote {} samples ({} step{}) to {}.", request.count, request.steps, if request.steps == 1 { "" } else { "s" }, request.out.display());
    Ok(())
}

/// `count` samples in batches, all from one seeded stream of prior noise, of the given classes
/// with guidance scale w; `each` receives every batch (n x dim values) and the number done.
pub fn generate(
    model: &ImageModel,
    (classes, guidance): (Option<Classes>, f64),
    steps: usize,
    count: usize,
    seed: u64,
    device: &Device,
    mut each: impl FnMut(Vec<f32>, usize) -> Result<(), Error>,
) -> Result<(), Error> {
    const BATCH: usize = 256;
    let dim = model.dim();
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let z = Tensor::<2>::from_data(TensorData::new(rng.normal_vec(n * dim, model.sigma_data()), [n, dim]), device);
        let x = model.sample(z, &model.condition(classes, guidance, done, n)?, steps, &mut rng)?;
        done += n;
        each(crate::floats(x, "samples")?, done)?;
    }
    Ok(())
}

/// `imm export`: a weights file rewritten in f16 with its card (half the size, for the page).
pub fn export(weights: &Path, out: &Path) -> Result<(), Error> {
    let bytes = Tensors::read(weights)?.to_bytes_as(true);
    write_atomic(out, &bytes)?;
    println!("Wrote {} ({:.2} MB, f16).", out.display(), bytes.len() as f64 / 1e6);
    Ok(())
}
