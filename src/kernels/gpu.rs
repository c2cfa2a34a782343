//! What the GPU kernels share: workgroup size and grid, output allocation, the inputs' storage
//! access mode.

use burn::backend::wgpu::CubeTensor;
use burn::cubecl::CubeCount;
use burn::tensor::{DType, Shape};

/// Threads per workgroup of every kernel (the shaders' `@workgroup_size`).
pub(super) const WORKGROUP: u32 = 256;
/// The most workgroups per dispatch dimension WebGPU guarantees.
const MAX_DISPATCH: u32 = 65_535;

/// A workgroup grid of at least `n` workgroups within the per-dimension limit; the shaders fold
/// (x, y) back into one index and skip those past the end.
pub(super) fn grid(n: usize) -> CubeCount {
    let n = u32::try_from(n).expect("workgroup count fits in u32");
    let y = n.div_ceil(MAX_DISPATCH);
    CubeCount::Static(n.div_ceil(y), y, 1)
}

/// A new contiguous f32 tensor on the device of `like`.
pub(super) fn empty_like(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let handle = like.client.empty(shape.num_elements() * size_of::<f32>());
    CubeTensor::new_contiguous(like.client.clone(), like.device.clone(), shape, handle, DType::F32)
}

/// The storage access mode of the shaders' inputs. Natively, cubecl sub-allocates tensors from
/// shared buffers, where a read-only binding next to a written output is a usage conflict; in the
/// browser every tensor has its own buffer, and WebGPU refuses two writable bindings of one buffer
/// (the MMD's y_t = y_r).
pub(super) fn input_access() -> &'static str {
    if cfg!(target_family = "wasm") { "read" } else { "read_write" }
}
