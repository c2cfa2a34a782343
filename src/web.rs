//! The wasm API the page calls (wasm-bindgen). JS does UI only; the maths stays here.

use std::cell::RefCell;

use burn::tensor::{Device, Tensor};
use serde::Serialize;
use wasm_bindgen::prelude::*;

use crate::fused::{Kernels, comparison, relative_error, test_shapes};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = console)]
    fn error(message: &str);
}

thread_local! {
    /// wgpu can be initialised once per page.
    static WEBGPU: RefCell<Option<Device>> = const { RefCell::new(None) };
}

/// Rust panics reach the console as `panicked at ...` (tests watch for it), not as a bare
/// `unreachable` trap.
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| error(&info.to_string())));
}

async fn webgpu() -> Result<Device, JsError> {
    if let Some(device) = WEBGPU.with(|d| d.borrow().clone()) {
        return Ok(device);
    }
    let device = Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| JsError::new(&format!("no usable WebGPU adapter: {e}")))?;
    WEBGPU.with(|d| *d.borrow_mut() = Some(device.clone()));
    Ok(device)
}

async fn read<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, JsError> {
    let data = t.into_data_async().await.map_err(|e| JsError::new(&format!("reading a tensor failed: {e:?}")))?;
    data.try_into_vec::<f32>().map_err(|e| JsError::new(&format!("{e:?}")))
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
pub async fn check_fused_mmd(seed: u32, cases: usize, max_dim: usize) -> Result<String, JsError> {
    let device = webgpu().await?;
    let mut rows = Vec::new();
    let shapes = test_shapes(seed.into(), cases, max_dim);
    for (i, (shape, kernels)) in shapes.iter().flat_map(|&s| [(s, Kernels::Wgsl), (s, Kernels::CubeCl)]).enumerate() {
        let c = comparison(&device, shape, seed as u64 + i as u64, kernels);
        let value_error = relative_error(&read(c.fused.0).await?, &read(c.reference.0).await?);
        let gradient_error = relative_error(&read(c.fused.1).await?, &read(c.reference.1).await?);
        rows.push(Check { kernels: format!("{kernels:?}"), shape, value_error, gradient_error });
    }
    serde_json::to_string(&rows).map_err(|e| JsError::new(&e.to_string()))
}
