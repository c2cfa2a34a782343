//! Named training set-ups. The 2D presets train on a CPU in a minute; `mnist-tiny` in minutes.

use crate::data::images::{ImageData, ImageSet, Images, LabelDraw};
use crate::data::latents::LatentData;
use crate::data::toy::{SIGMA_DATA, Toy};
use crate::Error;
use crate::method::precond::{Parameterization, Precond, TimeInput};
use crate::method::sampler::{Grid, Sampler};
use crate::method::schedule::{Schedule, Times};
use crate::method::{flow_matching::FlowMatching, imm::Imm};
use crate::networks::mlp::MlpConfig;
use crate::networks::dit::DiTConfig;
use crate::networks::image::ImageNetConfig;
use crate::networks::songunet::SongUNetConfig;
use crate::training::trainer::{OptimizerKind, TrainConfig};

#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub toy: Toy,
    pub net: MlpConfig,
    pub imm: Imm,
    pub fm: FlowMatching,
    pub train: TrainConfig,
}

/// Names of the 2D presets, accepted by [`preset`].
pub fn names() -> Vec<&'static str> {
    Toy::ALL.iter().map(|t| t.name()).collect()
}

/// The 2D recipe: the paper's choices scaled down (imm-algorithm.md §9): OT-FM, Euler-FM,
/// eps = 0, T = 0.994, a = 1, b = 4; M, k, batch and lr chosen for a CPU budget.
pub fn preset(name: &str) -> Result<Preset, Error> {
    let toy = Toy::from_name(name).ok_or_else(|| {
        Error::new(format!(
            "unknown preset '{name}'; available: {}, {}",
            names().join(", "),
            IMAGE_PRESETS.join(", ")
        ))
    })?;
    let precond = Precond {
        schedule: Schedule::OtFm,
        parameterization: Parameterization::EulerFm,
        sigma_data: SIGMA_DATA,
        time_input: TimeInput::S,
        time_scale: 1000.0,
    };
    let (eps, t_max) = (0.0, 0.994);
    Ok(Preset {
        name: toy.name(),
        toy,
        net: MlpConfig::new(),
        imm: Imm {
            precond: precond.clone(),
            times: Times { schedule: Schedule::OtFm, eps, t_max, k: 12, min_gap: 0.0 },
            particles: 4,
            a: 1.0,
            b: 4.0,
            sampler: Sampler::Pushforward,
            grid: Grid::Uniform,
        },
        fm: FlowMatching { precond, eps, t_max, grid: Grid::Uniform, sampler: Sampler::Pushforward },
        train: TrainConfig {
            batch: 512,
            total_nimg: 1_000_000,
            lr: 1e-3,
            optimizer: OptimizerKind::Adam,
            ema: 0.995,
            log_every_nimg: 50_000,
            seed: 0,
            accumulate: 1,
        },
    })
}

/// What an image preset trains on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data {
    /// One of the image sets (or a folder of images in its place).
    Images(ImageSet),
    /// Stable Diffusion VAE latents: a folder that `imm encode` wrote (`--data-dir`).
    Latents,
}

impl Data {
    /// The image set, for a preset that trains on one.
    pub fn images(self) -> Option<ImageSet> {
        match self {
            Data::Images(set) => Some(set),
            Data::Latents => None,
        }
    }

    /// As run configurations name it.
    pub fn name(self) -> &'static str {
        match self {
            Data::Images(set) => set.name(),
            Data::Latents => "latents",
        }
    }
}

/// An image set-up: data, network, both methods and the training schedule.
#[derive(Clone, Debug)]
pub struct ImagePreset {
    pub name: &'static str,
    pub data: Data,
    /// Side of the training images after padding.
    pub side: usize,
    pub xflip: bool,
    pub net: ImageNetConfig,
    /// Probability that a training label is replaced by the null label (conditional presets).
    pub label_dropout: f64,
    /// Which images of a batch share a label (conditional presets).
    pub labels: LabelDraw,
    pub imm: Imm,
    pub fm: FlowMatching,
    pub train: TrainConfig,
    /// Sample grids, an EMA snapshot and the resumable state every this many images.
    pub snapshot_every_nimg: u64,
}

impl ImagePreset {
    /// Training batches of `images` as this preset draws them: padded to its side, flipped if it
    /// says so, and for a conditional preset with their labels and its label dropout, shared by
    /// runs of `group` images (the method's) when its labels are drawn per group.
    pub fn batches(&self, images: Images, seed: u64, group: usize) -> Result<ImageData, Error> {
        let data = ImageData::new(images, self.side, self.xflip, seed)?;
        match self.net.classes() {
            0 => Ok(data),
            classes => data.with_labels(classes, self.label_dropout, self.labels.run(group)),
        }
    }

    /// Training batches of `latents` as this preset draws them, with labels as [`ImagePreset::batches`].
    pub fn latent_batches(&self, latents: LatentData, group: usize) -> Result<LatentData, Error> {
        match self.net.classes() {
            0 => Ok(latents),
            classes => latents.with_labels(classes, self.label_dropout, self.labels.run(group)),
        }
    }
}

pub const IMAGE_PRESETS: [&str; 12] = [
    "mnist-tiny",
    "fmnist-tiny",
    "mnist-cond-tiny",
    "fmnist-cond-tiny",
    "mnist-dit",
    "fmnist-small",
    "cifar10-tiny",
    "cifar10-paper",
    "cifar10-cond-paper",
    "latent-dit-s",
    "imagenet256-xl2",
    "imagenet256-xl2-ts",
];

/// The image presets. `cifar10-paper` is the paper's Table 5 recipe exactly; the small ones keep
/// its choices (OT-FM, Simple-EDM, eps 0.006, T 0.994, M = 4, a = 1, b = 5) and shrink the rest.
pub fn image_preset(name: &str) -> Option<ImagePreset> {
    let (eps, t_max) = (0.006, 0.994);
    let precond = Precond {
        schedule: Schedule::OtFm,
        parameterization: Parameterization::SimpleEdm,
        sigma_data: 0.5,
        time_input: TimeInput::S,
        time_scale: 1000.0,
    };
    let imm = |k: u32| Imm {
        precond: precond.clone(),
        times: Times { schedule: Schedule::OtFm, eps, t_max, k, min_gap: 0.0 },
        particles: 4,
        a: 1.0,
        b: 5.0,
        sampler: Sampler::Pushforward,
        grid: Grid::Uniform,
    };
    let fm = FlowMatching { precond: precond.clone(), eps, t_max, grid: Grid::Uniform, sampler: Sampler::Pushforward };
    let train = |batch: usize, total_nimg: u64, lr: f64, optimizer: OptimizerKind, ema: f64, log_every_nimg: u64| TrainConfig {
        batch,
        total_nimg,
        lr,
        optimizer,
        ema,
        log_every_nimg,
        seed: 0,
        accumulate: 1,
    };
    let unet = |channels: usize, side: usize| {
        SongUNetConfig::new().with_img_resolution(side).with_in_channels(channels).with_out_channels(channels)
    };
    let song = ImageNetConfig::SongUNet;
    Some(match name {
        // Sized for a 2-core CPU: 28 px, three levels (28, 14, 7), attention only at 7 px. A short
        // budget wants many small steps and a large gap t - r: at 24K images, batch 16 with k = 8
        // halves the 2-step FID of batch 64 with k = 12 (README, "Image models").
        "mnist-tiny" => ImagePreset {
            name: "mnist-tiny",
            data: Data::Images(ImageSet::Mnist),
            side: 28,
            xflip: false,
            net: song(unet(1, 28).with_model_channels(16).with_channel_mult(vec![1, 2, 2]).with_num_blocks(1).with_attn_resolutions(vec![7])),
            label_dropout: 0.0,
            labels: LabelDraw::Particle,
            imm: imm(8),
            fm,
            train: train(16, 60_000, 2e-3, OptimizerKind::Adam, 0.999, 2_000),
            snapshot_every_nimg: 10_000,
        },
        // mnist-tiny on Fashion-MNIST: the quality table's second dataset.
        "fmnist-tiny" => ImagePreset { name: "fmnist-tiny", data: Data::Images(ImageSet::FashionMnist), ..image_preset("mnist-tiny")? },
        // The tiny network with class labels, trained with the paper's label dropout 0.1 so that
        // it also learns the null label that guidance needs.
        "mnist-cond-tiny" => {
            let tiny = image_preset("mnist-tiny")?;
            ImagePreset { name: "mnist-cond-tiny", net: tiny.net.with_classes(10), label_dropout: 0.1, ..tiny }
        }
        "fmnist-cond-tiny" => ImagePreset { name: "fmnist-cond-tiny", data: Data::Images(ImageSet::FashionMnist), ..image_preset("mnist-cond-tiny")? },
        // The ImageNet network in pixel space, small enough for a CPU: DiT with patch 4 (7 x 7
        // tokens), hidden 64, depth 4, 4 heads, labels; the ImageNet recipe's Euler-FM, eps 0,
        // b = 4, k = 12 and t - s as the second time input.
        "mnist-dit" => {
            let dit = DiTConfig::new()
                .with_img_resolution(28)
                .with_in_channels(1)
                .with_patch_size(4)
                .with_hidden_size(64)
                .with_depth(4)
                .with_num_heads(4)
                .with_num_classes(10);
            let precond = Precond { parameterization: Parameterization::EulerFm, time_input: TimeInput::Stride, ..precond.clone() };
            let times = Times { schedule: Schedule::OtFm, eps: 0.0, t_max, k: 12, min_gap: 0.0 };
            ImagePreset {
                name: "mnist-dit",
                net: ImageNetConfig::DiT(dit),
                label_dropout: 0.1,
                labels: LabelDraw::Particle,
                imm: Imm { precond: precond.clone(), times, b: 4.0, ..imm(12) },
                fm: FlowMatching { precond, eps: 0.0, t_max, grid: Grid::Uniform, sampler: Sampler::Pushforward },
                ..image_preset("mnist-tiny")?
            }
        }
        // A GPU-sized Fashion-MNIST model: padded to 32 px, levels 32/16/8.
        "fmnist-small" => ImagePreset {
            name: "fmnist-small",
            data: Data::Images(ImageSet::FashionMnist),
            side: 32,
            xflip: true,
            net: song(unet(1, 32).with_model_channels(32).with_channel_mult(vec![1, 2, 2]).with_num_blocks(2).with_attn_resolutions(vec![8])),
            label_dropout: 0.0,
            labels: LabelDraw::Particle,
            imm: imm(12),
            fm,
            train: train(256, 5_000_000, 5e-4, OptimizerKind::Radam, 0.9995, 50_000),
            snapshot_every_nimg: 500_000,
        },
        // A browser-sized CIFAR-10 model, for training on the page from dropped batch files.
        "cifar10-tiny" => ImagePreset {
            name: "cifar10-tiny",
            data: Data::Images(ImageSet::Cifar10),
            side: 32,
            xflip: true,
            net: song(unet(3, 32).with_model_channels(16).with_channel_mult(vec![1, 2, 2]).with_num_blocks(1).with_attn_resolutions(vec![8])),
            ..image_preset("mnist-tiny")?
        },
        // [P] Table 5: 55M DDPM++, dropout 0.2, B = 4096, M = 4, RAdam lr 1e-4, EMA 0.9999, k = 15,
        // 400K steps. Sample with 2 steps at eta(t1) = 1.4: `--steps 2 --grid eta:1.4`.
        "cifar10-paper" => ImagePreset {
            name: "cifar10-paper",
            data: Data::Images(ImageSet::Cifar10),
            side: 32,
            xflip: true,
            net: song(
                unet(3, 32)
                    .with_model_channels(128)
                    .with_channel_mult(vec![2, 2, 2])
                    .with_num_blocks(4)
                    .with_attn_resolutions(vec![16])
                    .with_dropout(0.2),
            ),
            label_dropout: 0.0,
            labels: LabelDraw::Particle,
            imm: imm(15),
            fm,
            train: train(4096, 400_000 * 4096, 1e-4, OptimizerKind::Radam, 0.9999, 409_600),
            snapshot_every_nimg: 10_240_000,
        },
        // cifar10-paper with the ten class labels and the ImageNet runs' label dropout 0.1 ([P] Table 5),
        // for a GPU (the paper trains CIFAR-10 unconditionally).
        "cifar10-cond-paper" => {
            let paper = image_preset("cifar10-paper")?;
            ImagePreset { name: "cifar10-cond-paper", net: paper.net.with_classes(10), label_dropout: 0.1, ..paper }
        }
        // Class-conditional DiT on Stable Diffusion VAE latents (4 x 32 x 32 for 256 px images) with
        // the ImageNet recipe ([P] Table 5): Euler-FM, eps 0, T 0.994, M = 4, k = 12, a = 1, b = 4,
        // label dropout 0.1; the classes and the latent side come from the encoded folder. DiT-S/2,
        // batch 256: a model one GPU trains in about an hour.
        "latent-dit-s" => {
            let dit = DiTConfig::named("S/2").ok()?.with_img_resolution(32).with_in_channels(4);
            let precond = Precond { parameterization: Parameterization::EulerFm, ..precond.clone() };
            let times = Times { schedule: Schedule::OtFm, eps: 0.0, t_max, k: 12, min_gap: 0.0 };
            ImagePreset {
                name: "latent-dit-s",
                data: Data::Latents,
                side: 32,
                xflip: false,
                net: ImageNetConfig::DiT(dit),
                label_dropout: 0.1,
                labels: LabelDraw::Particle,
                imm: Imm { precond: precond.clone(), times, b: 4.0, ..imm(12) },
                fm: FlowMatching { precond, eps: 0.0, t_max, grid: Grid::Uniform, sampler: Sampler::Pushforward },
                train: train(256, 4_000_000, 1e-4, OptimizerKind::Adam, 0.9995, 51_200),
                snapshot_every_nimg: 512_000,
            }
        }
        // [P] Table 5, ImageNet-256: DiT-XL/2, B = 4096, lr 1e-4 (AdamW without weight decay, which
        // is Adam), EMA 0.9999, 1.2M steps. Sample with guidance 1.5 (`--cfg 1.5`).
        "imagenet256-xl2" => {
            let small = image_preset("latent-dit-s")?;
            let ImageNetConfig::DiT(dit) = &small.net else { return None };
            let xl = DiTConfig::named("XL/2").ok()?.with_img_resolution(dit.img_resolution).with_in_channels(dit.in_channels);
            ImagePreset {
                name: "imagenet256-xl2",
                net: ImageNetConfig::DiT(xl),
                train: train(4096, 1_200_000 * 4096, 1e-4, OptimizerKind::Adam, 0.9999, 409_600),
                snapshot_every_nimg: 10_240_000,
                ..small
            }
        }
        // The settings of the paper's FP16 runs and of the released 1.99 checkpoint
        // (`imagenet256_ts_a2`): t - s as the second time input, a = 2, r at least 1e-4 below t;
        // train it as they did with `--precision f16`.
        "imagenet256-xl2-ts" => {
            let xl = image_preset("imagenet256-xl2")?;
            let precond = Precond { time_input: TimeInput::Stride, ..xl.imm.precond.clone() };
            let times = Times { min_gap: 1e-4, ..xl.imm.times.clone() };
            ImagePreset {
                name: "imagenet256-xl2-ts",
                imm: Imm { precond: precond.clone(), times, a: 2.0, ..xl.imm.clone() },
                fm: FlowMatching { precond, ..xl.fm.clone() },
                ..xl
            }
        }
        _ => return None,
    })
}
