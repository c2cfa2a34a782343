//! Training: the loop ([`trainer`]), the RAdam optimizer ([`radam`]), the [`presets`], trained
//! image models with the card their snapshots carry ([`image_model`]), and data parallelism
//! across processes ([`ranks`]; over MPI with `--features mpi`). Natively also an image run on
//! disk ([`run`], in a [`run_dir`]), sampling weights files ([`sample`]), latent models' decoder
//! ([`decoder`]) and the encoding of images into latents ([`encode`]).

#[cfg(not(target_family = "wasm"))]
pub mod decoder;
#[cfg(not(target_family = "wasm"))]
pub mod encode;
pub mod image_model;
#[cfg(all(feature = "mpi", not(target_family = "wasm")))]
pub mod mpi;
pub mod presets;
pub mod radam;
pub mod ranks;
#[cfg(not(target_family = "wasm"))]
pub mod run;
#[cfg(not(target_family = "wasm"))]
pub mod run_dir;
#[cfg(not(target_family = "wasm"))]
pub mod sample;
pub mod trainer;
