//! Inductive Moment Matching (Zhou, Ermon, Song, ICML 2025) on burn.
//!
//! The folders are the layers, lowest first; a module imports only from layers below its own:
//! - [`io`]: safetensors files, module parameters by name, .npz arrays, PNG figures.
//! - [`kernels`]: IMM's grouped MMD, as plain ops (the reference) and as fused WGSL / CubeCL
//!   kernels; stride-1 convolution on the CPU.
//! - [`networks`]: the [`networks::Network`] trait, the 2D MLP, DDPM++ (SongUNet), DiT, the
//!   Stable Diffusion VAE.
//! - [`data`]: the [`data::Dataset`] trait, 2D distributions, image files, VAE latents.
//! - [`method`]: schedule, preconditioning, losses, samplers, and the [`method::Method`]s (IMM,
//!   flow matching, MeanFlow, consistency training, shortcut models).
//! - [`training`]: the loop (which knows a `Method`, not which one), optimizers, presets, and
//!   trained image models with their cards; data parallelism across processes (MPI); an image
//!   run on disk (configuration, snapshots and checkpoints, resume), sampling, latent encoding.
//! - [`evaluation`]: energy distance, FID (Inception or a small classifier), golden-file parity;
//!   `imm eval`'s pipeline and the 2D runs with their evaluation.
//! - [`bench`] (native): the speed and cost figures of `imm bench`.
//! - [`cli`] (native) and [`web`] (wasm): the two faces; they parse, call one function and show
//!   the result, and nothing imports them.
//!
//! [`Error`], [`Rng`], class [`Labels`], the `--device` choice ([`DeviceChoice`]), a fingerprint
//! ([`fnv1a`]) and a few tensor helpers sit at the root, below every layer.
//! References: [P] the paper, notes in `shared/docs/imm-algorithm.md`.

pub mod data;
pub mod evaluation;
pub mod io;
pub mod kernels;
mod labels;
pub mod method;
pub mod networks;
mod rng;
pub mod training;

#[cfg(not(target_family = "wasm"))]
pub mod bench;
#[cfg(not(target_family = "wasm"))]
pub mod cli;
#[cfg(not(target_family = "wasm"))]
mod device;
#[cfg(target_family = "wasm")]
pub mod web;

use burn::tensor::{Device, ExecutionError, Tensor, TensorData};

#[cfg(not(target_family = "wasm"))]
pub use device::DeviceChoice;
pub use labels::Labels;
pub use rng::Rng;

/// An error for people: one line that says what is wrong and what to do, and its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String, pub ErrorKind);

/// What a caller may do about an [`Error`]: the page stops its loops on a lost device and on
/// training that stopped, and says the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Anything else: bad input, a missing file, a refused setting.
    Other,
    /// The GPU device was lost; every later call on it fails.
    DeviceLost,
    /// Training stopped: its numbers were not finite in too many steps in a row.
    Stopped,
}

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into(), ErrorKind::Other)
    }

    pub fn of_kind(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self(message.into(), kind)
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// FNV-1a, 64 bits: a fingerprint of weights, files and lists (to tell them apart, not to guard
/// against tampering).
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A failed read of `what` from a device. A lost device (after a driver reset, for one) fails
/// every later call too, so it says so plainly; its reason comes wrapped in "The device is
/// poisoned / Caused by: ... / Backtrace: ...", of which the cause is kept.
pub fn read_error(e: ExecutionError, what: &str) -> Error {
    match e {
        ExecutionError::DevicePoisoned { reason } => {
            let mut lines = reason.lines().map(str::trim).filter(|l| !l.is_empty());
            let why = lines.by_ref().skip_while(|l| !l.starts_with("Caused by")).nth(1).unwrap_or("no reason given");
            Error::of_kind(ErrorKind::DeviceLost, format!("The GPU device was lost ({why})"))
        }
        e => Error::new(format!("reading {what} from the device failed: {e}")),
    }
}

/// The values of `t` as f32, read from its device (blocking); `what` names them in an error.
pub fn floats<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>, Error> {
    let data = t.try_into_data().map_err(|e| read_error(e, what))?;
    f32_values(data, what)
}

/// [`floats`], read asynchronously (the only read WebGPU allows).
pub async fn floats_async<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>, Error> {
    let data = t.into_data_async().await.map_err(|e| read_error(e, what))?;
    f32_values(data, what)
}

fn f32_values(data: TensorData, what: &str) -> Result<Vec<f32>, Error> {
    data.convert::<f32>().try_into_vec::<f32>().map_err(|e| Error::new(format!("reading {what}: {e:?}")))
}

/// Per-row f64 values as an f32 tensor of shape [B].
pub(crate) fn row(values: &[f64], device: &Device) -> Tensor<1> {
    let v: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(v, [values.len()]), device)
}

/// Per-row f64 values as an f32 column of shape [B, 1], to scale the rows of a [B, D] tensor.
pub(crate) fn column(values: &[f64], device: &Device) -> Tensor<2> {
    row(values, device).reshape([values.len(), 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lost device says so, with its kind; the cause is kept, the wrapping not.
    #[test]
    fn a_lost_device_says_so() {
        let reason = "The device is poisoned\nCaused by:\n  Unknown: A valid external Instance reference no longer exists.\nBacktrace:\nNo backtrace available";
        let lost = read_error(ExecutionError::DevicePoisoned { reason: reason.into() }, "x");
        assert_eq!(lost.0, "The GPU device was lost (Unknown: A valid external Instance reference no longer exists.)");
        assert_eq!(lost.1, ErrorKind::DeviceLost);
        let other = read_error(ExecutionError::WithContext { reason: "out of memory".into() }, "the weights");
        assert!(other.0.starts_with("reading the weights from the device failed") && other.0.contains("out of memory"), "{other}");
        assert_eq!(other.1, ErrorKind::Other);
    }
}
