//! The page's WebGPU device, and the check of the fused MMD kernels on it (not in the threaded
//! build, which has no wgpu).

use std::cell::RefCell;

use burn::tensor::Device;
use serde::Serialize;
use wasm_bindgen::prelude::*;

use super::fail;
use crate::kernels::Kernels;
use crate::kernels::mmd::{comparison, relative_error, test_shapes};

thread_local! {
    /// wgpu can be initialised once per page.
    static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
}

/// The WebGPU device, initialised on the first call.
pub(super) async fn webgpu() -> Result<Device, JsValue> {
    if let Some(device) = WEBGPU.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| fail(format!("no usable WebGPU adapter: {e}")))?;
    WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

#[derive(Serialize)]
struct Check {
    kernels: String,
    shape: [usize; 3],
    value_error: f32,
    gradient_error: f32,
}

/// Compares both fused MMD implementations (WGSL, CubeCL) with the reference tensor ops on WebGPU
/// over `cases` random shapes; returns JSON rows `{kernels, shape, value_error, gradient_error}`
/// (relative errors).
#[wasm_bindgen(js_name = checkFusedMmd)]
pub async fn check_fused_mmd(seed: u32, cases: usize, max_dim: usize) -> Result<String, JsValue> {
    let device = webgpu().await?;
    let mut rows = Vec::new();
    let shapes = test_shapes(seed.into(), cases, max_dim);
    for (i, (shape, kernels)) in shapes.iter().flat_map(|&s| [(s, Kernels::Wgsl), (s, Kernels::CubeCl)]).enumerate() {
        let c = comparison(&device, shape, seed as u64 + i as u64, kernels);
        let value_error = relative_error(&super::read(c.fused.0, "the fused MMD").await?, &super::read(c.reference.0, "the reference MMD").await?);
        let gradient_error = relative_error(&super::read(c.fused.1, "the fused MMD's gradient").await?, &super::read(c.reference.1, "the reference MMD's gradient").await?);
        rows.push(Check { kernels: format!("{kernels:?}"), shape, value_error, gradient_error });
    }
    serde_json::to_string(&rows).map_err(|e| fail(e.to_string()))
}
