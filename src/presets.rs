//! Named training set-ups. The 2D presets are small enough to train on a CPU in a minute.

use crate::Error;
use crate::data2d::{SIGMA_DATA, Toy};
use crate::method::{FlowMatching, Imm};
use crate::network::MlpConfig;
use crate::precond::{Parameterization, Precond, TimeInput};
use crate::sampler::{Grid, Sampler};
use crate::schedule::{Schedule, Times};
use crate::trainer::{OptimizerKind, TrainConfig};

#[derive(Clone, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub toy: Toy,
    pub net: MlpConfig,
    pub imm: Imm,
    pub fm: FlowMatching,
    pub train: TrainConfig,
}

/// Names accepted by [`preset`].
pub fn names() -> Vec<&'static str> {
    Toy::ALL.iter().map(|t| t.name()).collect()
}

/// The 2D recipe: the paper's choices scaled down (imm-algorithm.md §9): OT-FM, Euler-FM,
/// eps = 0, T = 0.994, a = 1, b = 4; M, k, batch and lr chosen for a CPU budget.
pub fn preset(name: &str) -> Result<Preset, Error> {
    let toy = Toy::from_name(name).ok_or_else(|| {
        Error::new(format!("unknown preset '{name}'; available: {}", names().join(", ")))
    })?;
    let precond = Precond {
        schedule: Schedule::OtFm,
        parameterization: Parameterization::EulerFm,
        sigma_data: SIGMA_DATA,
        time_input: TimeInput::S,
        time_scale: 1000.0,
    };
    let (eps, t_max) = (0.0, 0.994);
    Ok(Preset {
        name: toy.name(),
        toy,
        net: MlpConfig::new(),
        imm: Imm {
            precond: precond.clone(),
            times: Times { schedule: Schedule::OtFm, eps, t_max, k: 12, min_gap: 0.0 },
            particles: 4,
            a: 1.0,
            b: 4.0,
            sampler: Sampler::Pushforward,
            grid: Grid::Uniform,
        },
        fm: FlowMatching { precond, eps, t_max, grid: Grid::Uniform },
        train: TrainConfig {
            batch: 512,
            total_nimg: 1_000_000,
            lr: 1e-3,
            optimizer: OptimizerKind::Adam,
            ema: 0.995,
            log_every_nimg: 50_000,
            seed: 0,
        },
    })
}
