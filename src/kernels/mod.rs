//! Fused kernels and their plain-op references. [`mmd`]: IMM's grouped Laplace-kernel MMD, with its
//! forward and backward as WGSL (`shaders/`) on wgpu and as CubeCL on the other cubecl runtimes.
//! [`group_norm`]: GroupNorm + SiLU, forward and backward, in WGSL, CubeCL and on the CPU (Flex).
//! On the CPU also [`conv`], stride-1 convolution, and [`resample`], SongUNet's 2x resampling.
//! The GPU kernels come with the `gpu` feature (off only in the page's threaded build).

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device};

pub mod conv;
mod conv_direct;
mod cpu;
#[cfg(feature = "gpu")]
mod gpu;
pub mod group_norm;
#[cfg(feature = "gpu")]
mod group_norm_gpu;
pub mod mmd;
#[cfg(feature = "gpu")]
mod mmd_cube;
#[cfg(feature = "gpu")]
mod mmd_gpu;
pub mod resample;

/// The implementations of the fused kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kernels {
    /// `shaders/*.wgsl`, for the wgpu runtime.
    Wgsl,
    /// `*_cube.rs`, compiled by cubecl for any of its runtimes.
    CubeCl,
    /// Plain Rust on burn's Flex backend (GroupNorm and convolution; the MMD has none).
    Cpu,
}

/// The fused kernels for tensors on this device and of this type, if any: WGSL on wgpu, CubeCL on
/// the other cubecl runtimes, the CPU kernels on Flex; f32 only.
pub fn kernels_for(device: &Device, dtype: DType) -> Option<Kernels> {
    match device.clone().inner().as_dispatch() {
        _ if dtype != DType::F32 => None,
        #[cfg(feature = "gpu")]
        DispatchDevice::Cube(burn::cubecl::Device::Wgpu(_)) => Some(Kernels::Wgsl),
        #[cfg(feature = "gpu")]
        DispatchDevice::Cube(_) => Some(Kernels::CubeCl),
        DispatchDevice::Flex(_) => Some(Kernels::Cpu),
        #[allow(unreachable_patterns)]
        _ => None,
    }
}
