//! Training: the loop ([`trainer`]), the RAdam optimizer ([`radam`]), the [`presets`], and trained
//! image models with the card their snapshots carry ([`image_model`]).

pub mod image_model;
pub mod presets;
pub mod radam;
pub mod trainer;
