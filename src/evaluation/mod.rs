//! Evaluation: the energy distance of 2D samples ([`energy`]), the Fréchet distance ([`fid`]) over
//! the FID Inception's features ([`inception`]) or a small classifier's ([`classifier`]), and the
//! parity check against golden files of the official code ([`golden`]).

pub mod classifier;
pub mod energy;
pub mod fid;
#[cfg(not(target_family = "wasm"))]
pub mod golden;
#[cfg(not(target_family = "wasm"))]
pub mod inception;
