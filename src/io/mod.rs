//! Files: [`safetensors`] (weights in PyTorch's names and layouts), [`weights`] (a module's
//! parameters by name, to and from those files), [`npz`] (images for FID tools, reference statistics) and [`plot`]
//! (PNG figures).

use std::path::Path;

use crate::Error;

#[cfg(not(target_family = "wasm"))]
pub mod npz;
#[cfg(not(target_family = "wasm"))]
pub mod plot;
pub mod safetensors;
pub mod weights;

/// Writes `bytes` to `path` through a temporary `.partial` file and a rename, so that a crash or a
/// kill never leaves a half-written file under the final name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let fail = |p: &Path, e: std::io::Error| Error::new(format!("cannot write {}: {e}", p.display()));
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).map_err(|e| fail(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(path, e))
}
