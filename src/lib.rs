//! Inductive Moment Matching (Zhou, Ermon, Song, ICML 2025) on burn.
//!
//! The five nouns: [`schedule`] (interpolant and time maths), [`precond`] (parameterisation of
//! f_{s,t}), [`loss`] (IMM's MMD, with fused kernels in [`fused`], and flow matching),
//! [`sampler`] (pushforward, restart, grids) and
//! [`trainer`] (a loop that knows a [`trainer::Method`] but not which). [`method`] joins a loss and a
//! sampler into a method; the networks ([`network`]'s MLP, [`songunet`]'s DDPM++), data
//! ([`data2d`], [`images`]), weights on disk ([`safetensors`], [`weights`]) and [`presets`] supply
//! the rest.
//! References: [P] the paper, notes in `shared/docs/imm-algorithm.md`.

pub mod classifier;
pub mod data2d;
pub mod eval;
pub mod fid;
pub mod fused;
mod fused_cube;
#[cfg(not(target_family = "wasm"))]
pub mod golden;
pub mod image_model;
pub mod images;
#[cfg(not(target_family = "wasm"))]
pub mod inception;
pub mod loss;
mod md5;
pub mod method;
pub mod network;
pub mod precond;
pub mod presets;
pub mod radam;
mod rng;
pub mod safetensors;
pub mod sampler;
pub mod schedule;
pub mod songunet;
pub mod trainer;
pub mod weights;

#[cfg(not(target_family = "wasm"))]
pub mod app;
#[cfg(not(target_family = "wasm"))]
pub mod app_eval;
#[cfg(not(target_family = "wasm"))]
pub mod app_images;
#[cfg(not(target_family = "wasm"))]
pub mod bench;
#[cfg(not(target_family = "wasm"))]
pub mod plot;
#[cfg(target_family = "wasm")]
pub mod web;

use burn::tensor::{Device, Tensor, TensorData};

pub use rng::Rng;

/// An error for people: one line that says what is wrong and what to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String);

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Per-row f64 values as an f32 tensor of shape [B].
pub(crate) fn row(values: &[f64], device: &Device) -> Tensor<1> {
    let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

/// Per-row f64 values as an f32 column of shape [B, 1], to scale the rows of a [B, D] tensor.
pub(crate) fn column(values: &[f64], device: &Device) -> Tensor<2> {
    row(values, device).reshape([values.len(), 1])
}
