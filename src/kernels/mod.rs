//! Fused kernels and their plain-op references. [`mmd`]: IMM's grouped Laplace-kernel MMD, with its
//! forward and backward as WGSL (`shaders/`) on wgpu and as CubeCL on the other cubecl runtimes.

pub mod mmd;
mod mmd_cube;
