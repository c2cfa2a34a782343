//! Training: the loop ([`trainer`]), the RAdam optimizer ([`radam`]), the [`presets`], trained
//! image models with the card their snapshots carry ([`image_model`]), and data parallelism
//! across processes ([`ranks`]; over MPI with `--features mpi`).

pub mod image_model;
pub mod presets;
pub mod radam;
pub mod ranks;
#[cfg(all(feature = "mpi", not(target_family = "wasm")))]
pub mod mpi;
pub mod trainer;
