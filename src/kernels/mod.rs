//! Fused kernels and their plain-op references. [`mmd`]: IMM's grouped Laplace-kernel MMD, with its
//! forward and backward as WGSL (`shaders/`) on wgpu and as CubeCL on the other cubecl runtimes.
//! On the CPU (Flex): [`conv`], stride-1 convolution, and [`group_norm`], GroupNorm + SiLU, each
//! forward and backward.

pub mod conv;
mod cpu;
pub mod group_norm;
pub mod mmd;
mod mmd_cube;
