//! Evaluation: the energy distance of 2D samples ([`energy`]), the Fréchet distance ([`fid`]) over
//! the FID Inception's features ([`inception`]) or a small classifier's ([`classifier`]), and the
//! parity check against golden files of the official code ([`golden`]). Natively also `imm eval`'s
//! pipeline ([`pipeline`]: reference statistics and their cache, FID at each step count) and the
//! 2D runs that train and then evaluate, the default demo among them ([`toy`]).

pub mod classifier;
pub mod energy;
pub mod fid;
#[cfg(not(target_family = "wasm"))]
pub mod golden;
#[cfg(not(target_family = "wasm"))]
pub mod inception;
#[cfg(not(target_family = "wasm"))]
pub mod pipeline;
#[cfg(not(target_family = "wasm"))]
pub mod toy;
