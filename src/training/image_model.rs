//! An image model read from a weights file: the network, built from the file's `imm` card (what
//! `imm train` writes) or from a preset for files without one (an export of the official
//! checkpoint), and the method that samples it. Used by `imm sample` and the page.

use burn::tensor::{Device, Tensor};
use serde_json::{Value, json};

use crate::io::safetensors::Tensors;
use crate::io::weights::{detect_prefix, load_named};
use crate::method::Method;
use crate::method::precond::Condition;
use crate::method::sampler::{Grid, Sampler};
use crate::method::{flow_matching::FlowMatching, imm::Imm};
use crate::networks::image::{ImageNet, ImageNetConfig};
use crate::networks::songunet::Precision;
use crate::training::presets::{ImagePreset, image_preset};
use crate::{Error, Labels, Rng};

/// The method a model was trained with, which is how it samples.
#[derive(Clone, Debug)]
pub enum Sampling {
    Imm(Imm),
    Fm(FlowMatching),
}

/// Which classes a conditional model samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Classes {
    /// Sample i gets class (i / row) mod L: one row of a grid per class.
    All { row: usize },
    One(usize),
}

impl Classes {
    /// The labels of samples `first..first + n` of `classes` classes.
    pub fn labels(self, first: usize, n: usize, classes: usize) -> Labels {
        let index = (first..first + n)
            .map(|i| match self {
                Classes::All { row } => (i / row.max(1)) % classes,
                Classes::One(c) => c,
            })
            .collect();
        Labels::new(index, classes).expect("classes are parsed in range")
    }
}

pub struct ImageModel {
    pub config: ImageNetConfig,
    pub net: ImageNet,
    pub sampling: Sampling,
    /// The `imm` card of the file, when it has one.
    pub card: Option<Value>,
}

impl ImageModel {
    /// Builds the network the file describes (or `preset`'s, for a file without a card) on
    /// `device` and loads its weights; `what` names the file in errors.
    pub fn load(file: &Tensors, what: &str, preset: Option<&ImagePreset>, device: &Device) -> Result<Self, Error> {
        let (config, method, card): (ImageNetConfig, Value, Option<Value>) = match (file.metadata.get("imm"), preset) {
            (Some(text), _) => {
                let card: Value =
                    serde_json::from_str(text).map_err(|e| Error::new(format!("{what} has damaged metadata: {e}")))?;
                let net = serde_json::from_value(card["net"].clone())
                    .map_err(|e| Error::new(format!("{what}: bad network config: {e}")))?;
                (net, card.clone(), Some(card))
            }
            (None, Some(p)) => (p.net.clone(), json!({"method": "imm", "method_config": p.imm}), None),
            (None, None) => {
                return Err(Error::new(format!("{what} does not say which network it holds; choose its preset")));
            }
        };
        // A card is untrusted input: build no network larger than the file's weights.
        let stored: u128 = file.tensors.values().map(|t| t.values.len() as u128).sum();
        if config.min_params() > stored {
            return Err(Error::new(format!(
                "{what} does not fit the network its card describes (at least {} parameters; the file holds {stored} values)",
                config.min_params()
            )));
        }
        let net = config.init(&mut Rng::new(0), device)?;
        let prefix = detect_prefix(&net, file);
        let net = load_named(net, file, prefix, what, None)?;
        let bad = |e: serde_json::Error| Error::new(format!("{what}: bad method config: {e}"));
        let settings = method["method_config"].clone();
        let sampling = match method["method"].as_str() {
            Some("fm") => Sampling::Fm(serde_json::from_value::<FlowMatching>(settings).map_err(bad)?),
            _ => Sampling::Imm(serde_json::from_value::<Imm>(settings).map_err(bad)?),
        };
        match &sampling {
            Sampling::Fm(fm) => fm.validate(),
            Sampling::Imm(imm) => imm.validate(),
        }
        .map_err(|e| Error::new(format!("{what}: bad method config: {e}")))?;
        Ok(Self { config, net, sampling, card })
    }

    /// A preset's network with fresh weights: what speed measurements need.
    pub fn untrained(preset: &ImagePreset, sampling: Sampling, device: &Device) -> Result<Self, Error> {
        let net = preset.net.init(&mut Rng::new(0), device)?;
        Ok(Self { config: preset.net.clone(), net, sampling, card: None })
    }

    /// The same weights computing in another dtype.
    pub fn with_precision(self, precision: Precision) -> Result<Self, Error> {
        let config = self.config.clone().with_precision(precision)?;
        Ok(Self { net: self.net.with_precision(precision), config, ..self })
    }

    /// Replaces the trained-with sampling times and IMM sampler by the given ones.
    pub fn choose_sampling(&mut self, grid: Option<Grid>, sampler: Option<Sampler>) {
        match &mut self.sampling {
            Sampling::Fm(fm) => fm.grid = grid.unwrap_or(fm.grid.clone()),
            Sampling::Imm(imm) => {
                imm.grid = grid.unwrap_or(imm.grid.clone());
                imm.sampler = sampler.unwrap_or(imm.sampler);
            }
        }
    }

    /// The number of classes the network is conditioned on; 0 for none.
    pub fn label_dim(&self) -> usize {
        self.config.classes()
    }

    /// The class names: the card's own (an image folder's), or its preset's dataset's; indices
    /// where neither names them.
    pub fn class_names(&self) -> Vec<String> {
        let own: Option<Vec<String>> = self.card.as_ref().and_then(|card| serde_json::from_value(card["classes"].clone()).ok());
        if let Some(names) = own.filter(|n| n.len() == self.label_dim()) {
            return names;
        }
        let preset = self.card.as_ref().and_then(|card| card["preset"].as_str()).and_then(image_preset);
        match preset {
            Some(p) if p.data.class_names().len() == self.label_dim() => p.data.class_names().iter().map(|n| n.to_string()).collect(),
            _ => (0..self.label_dim()).map(|i| i.to_string()).collect(),
        }
    }

    /// Parses a class choice: `all`, an index or a name (any case); `row` samples per class for
    /// `all`. None for an unconditional model, which accepts no choice.
    pub fn classes(&self, text: Option<&str>, row: usize) -> Result<Option<Classes>, Error> {
        let l = self.label_dim();
        let Some(text) = text else {
            return Ok((l > 0).then_some(Classes::All { row }));
        };
        if l == 0 {
            return Err(Error::new(format!("--class {text}: this model has no class labels")));
        }
        let names = self.class_names();
        if text.eq_ignore_ascii_case("all") {
            return Ok(Some(Classes::All { row }));
        }
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Ok(Some(Classes::One(i)));
        }
        match text.parse::<usize>() {
            Ok(i) if i < l => Ok(Some(Classes::One(i))),
            _ => Err(Error::new(format!("unknown class '{text}': use all, an index from 0 to {}, or one of {}", l - 1, names.join(", ")))),
        }
    }

    /// The condition of samples `first..first + n`: their classes, guided with scale `guidance`.
    pub fn condition(&self, classes: Option<Classes>, guidance: f64, first: usize, n: usize) -> Result<Condition, Error> {
        let labels = classes.map(|c| c.labels(first, n, self.label_dim()));
        Condition::guided(labels, guidance)
    }

    /// Values per image, C * H * W.
    pub fn dim(&self) -> usize {
        self.config.in_channels() * self.config.img_resolution() * self.config.img_resolution()
    }

    pub fn sigma_data(&self) -> f64 {
        match &self.sampling {
            Sampling::Imm(m) => m.sigma_data(),
            Sampling::Fm(m) => m.sigma_data(),
        }
    }

    pub fn check_steps(&self, steps: usize) -> Result<(), Error> {
        match &self.sampling {
            Sampling::Imm(m) => m.check_steps(steps),
            Sampling::Fm(m) => m.check_steps(steps),
        }
    }

    /// Samples from prior noise z under `condition` in `steps` steps.
    ///
    /// # Shapes
    /// - z: [B, C * H * W]; condition: B labels or none
    /// - output: [B, C * H * W]
    pub fn sample(&self, z: Tensor<2>, condition: &Condition, steps: usize, rng: &mut Rng) -> Result<Tensor<2>, Error> {
        match &self.sampling {
            Sampling::Imm(m) => m.sample(&self.net, z, condition, steps, rng),
            Sampling::Fm(m) => m.sample(&self.net, z, condition, steps, rng),
        }
    }
}
